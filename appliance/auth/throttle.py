"""Login throttling, shared by every replica through the ``login_throttle`` table.

Three counters slow password guessing without letting an attacker lock a real user out:

* **address** — failures from one client address, over all accounts, in a fixed 15-minute
  window: at most :data:`ADDRESS_MAX_FAILURES` per window (stops password spraying). The wait is
  never longer than the rest of the window, and it does not apply to a user at an address they
  have signed in from before (behind a proxy every user shares one address; the settings'
  ``trusted_proxies`` make X-Forwarded-For the address instead).
* **pair** (account + address) — consecutive failures for one account from one address: after
  :data:`FREE_ATTEMPTS`, each attempt waits ``2**(n - FREE_ATTEMPTS)`` seconds after the last
  failure, capped at 15 minutes; at :data:`MAX_CONSECUTIVE_FAILURES` that address may not try
  that account again until an admin unlocks it or the counters are reset.
* **account** — consecutive failures for one account from anywhere, with the same backoff and
  the same hard stop at 100, applied only to addresses the user has never logged in from. An
  attacker elsewhere can slow or stop guessing on the account, but cannot lock the user out of
  an address they have used before; there only the pair counter (which the attacker does not
  drive) applies.

So no account sees more than 100 consecutive failures from unfamiliar addresses, nor more than
100 from any one familiar address. A success resets the account and pair counters. Counters are
keyed by the username as typed (lowercased), so an unknown username is throttled exactly like a
real one and throttling reveals nothing about which accounts exist. Time is always passed in.

People type passwords into the user name field: the stored keys are never the name or address but
keyed digests of them (HMAC-SHA256 under :func:`derive_key` of the service's audit HMAC key, which
every replica holds), so the table reveals neither, and an offline guess at a low-entropy secret
needs the key too. The pair key is ``digest(name) + "\x1f" + digest(address)``, so an admin's
unlock (which knows only the name) still finds every address's counter for the account by prefix.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from appliance.audit.keys import AuditKeys
from appliance.db.models import LoginThrottle, TrustedAddress
from shared.errors import ConfigError, ThrottledError

__all__ = [
    "ADDRESS_MAX_FAILURES",
    "ADDRESS_WINDOW_S",
    "FREE_ATTEMPTS",
    "MAX_BACKOFF_S",
    "MAX_CONSECUTIVE_FAILURES",
    "CounterKeys",
    "backoff_s",
    "check",
    "counter_keys",
    "derive_key",
    "name_digest",
    "record_failure",
    "record_success",
    "reset_account",
]

FREE_ATTEMPTS = 5
MAX_BACKOFF_S = 15 * 60
MAX_CONSECUTIVE_FAILURES = 100
ADDRESS_WINDOW_S = 15 * 60
ADDRESS_MAX_FAILURES = 50

ACCOUNT, PAIR, ADDRESS = "account", "pair", "address"


def backoff_s(failures: int) -> float:
    """Seconds to wait after the last of ``failures`` consecutive failures (0 while free)."""
    if failures < FREE_ATTEMPTS:
        return 0.0
    return float(min(2 ** min(failures - FREE_ATTEMPTS, 20), MAX_BACKOFF_S))


def derive_key(keys: AuditKeys) -> bytes:
    """The throttle's digest key, derived from the audit HMAC key (never used as-is elsewhere)."""
    if keys.hmac_key is None:
        raise ConfigError("no audit HMAC key loaded: cannot key the login throttle")
    return hmac.new(keys.hmac_key, b"enclave.login-throttle.v1", hashlib.sha256).digest()


def _digest(key: bytes, kind: bytes, value: str) -> str:
    return hmac.new(key, kind + b"\x00" + value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def name_digest(key: bytes, username: str) -> str:
    """The stored form of a user name as typed (also how the audit log names an unknown one)."""
    return _digest(key, b"name", username.strip().lower()[:128])


@dataclass(frozen=True)
class CounterKeys:
    account: str
    pair: str
    address: str
    # The client address itself: the user's familiar addresses are kept per account, in clear.
    client: str


def counter_keys(key: bytes, username: str, address: str) -> CounterKeys:
    """The ``login_throttle.key`` of each counter a login by ``username`` from ``address`` drives."""
    addr = address.strip()[:64] or "unknown"
    account = name_digest(key, username)
    where = _digest(key, b"addr", addr)
    return CounterKeys(account=account, pair=f"{account}\x1f{where}", address=where, client=addr)


def _row(session: Session, scope: str, key: str, *, lock: bool = False) -> LoginThrottle | None:
    query = select(LoginThrottle).where(LoginThrottle.scope == scope, LoginThrottle.key == key)
    if lock:
        # PostgreSQL: hold the counter until commit, so parallel attempts on other replicas wait
        # for this one's verdict instead of all slipping through one check. (SQLite already
        # serialises writers: every transaction begins IMMEDIATE.)
        query = query.with_for_update()
    return session.scalar(query)


def _trusted(session: Session, user_id: int | None, address: str) -> bool:
    if user_id is None:
        return False
    return session.get(TrustedAddress, (user_id, address)) is not None


def _consecutive_wait(row: LoginThrottle | None, now: dt.datetime, what: str) -> None:
    if row is None or row.last_failure_at is None:
        return
    if row.failures >= MAX_CONSECUTIVE_FAILURES:
        raise ThrottledError(
            f"too many failed logins {what}: ask an administrator to unlock the account",
            retry_after=float(MAX_BACKOFF_S),
            reason="locked",
        )
    until = row.last_failure_at + dt.timedelta(seconds=backoff_s(row.failures))
    if now < until:
        wait = (until - now).total_seconds()
        raise ThrottledError(f"too many failed logins {what}: retry in {wait:.0f} s", retry_after=wait)


def check(
    session: Session,
    username: str,
    address: str,
    *,
    key: bytes,
    user_id: int | None,
    now: dt.datetime,
    lock: bool = True,
) -> None:
    """Raise ThrottledError if this attempt must not be tried now (it is then not counted).

    ``lock=False`` is a look on a read-only session (before any Argon2 work); the verdict that
    counts is the locked one in the write transaction.
    """
    keys = counter_keys(key, username, address)
    # Always address, pair, account: one lock order for every login, so no two can deadlock.
    addr_row = _row(session, ADDRESS, keys.address, lock=lock)
    pair_row = _row(session, PAIR, keys.pair, lock=lock)
    account_row = _row(session, ACCOUNT, keys.account, lock=lock)
    familiar = _trusted(session, user_id, keys.client)
    # A spray from a shared address (a NAT, a proxy) must not lock out users who sign in from
    # it every day: for them only the pair counter, which a sprayer does not drive, applies.
    if not familiar and addr_row is not None and addr_row.failures >= ADDRESS_MAX_FAILURES:
        until = addr_row.window_start + dt.timedelta(seconds=ADDRESS_WINDOW_S)
        if now < until:
            wait = (until - now).total_seconds()
            raise ThrottledError(
                f"too many failed logins from this address: retry in {wait:.0f} s", retry_after=wait
            )
    _consecutive_wait(pair_row, now, "from this address")
    if not familiar:
        _consecutive_wait(account_row, now, "for this account")


def _bump(session: Session, scope: str, key: str, now: dt.datetime, *, window_s: float | None) -> None:
    row = _row(session, scope, key)
    if row is None:
        try:
            # Another replica may create the same counter at the same moment.
            with session.begin_nested():
                row = LoginThrottle(scope=scope, key=key, failures=0, window_start=now)
                session.add(row)
        except IntegrityError:
            row = _row(session, scope, key)
            assert row is not None
    elif window_s is not None and now >= row.window_start + dt.timedelta(seconds=window_s):
        row.failures, row.window_start = 0, now
        session.flush()
    # Incremented in SQL, not in Python, so concurrent failures on several replicas all count.
    session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.id == row.id)
        .values(failures=LoginThrottle.failures + 1, last_failure_at=now)
    )
    session.flush()


def record_failure(session: Session, username: str, address: str, *, key: bytes, now: dt.datetime) -> None:
    """Count one failed password attempt on all three counters."""
    keys = counter_keys(key, username, address)
    _bump(session, ADDRESS, keys.address, now, window_s=ADDRESS_WINDOW_S)
    _bump(session, PAIR, keys.pair, now, window_s=None)
    _bump(session, ACCOUNT, keys.account, now, window_s=None)


def record_success(
    session: Session, username: str, address: str, *, key: bytes, user_id: int, now: dt.datetime
) -> None:
    """Reset the account and pair counters and remember the address as familiar."""
    keys = counter_keys(key, username, address)
    session.execute(
        delete(LoginThrottle).where(
            ((LoginThrottle.scope == ACCOUNT) & (LoginThrottle.key == keys.account))
            | ((LoginThrottle.scope == PAIR) & (LoginThrottle.key == keys.pair))
        )
    )
    trusted = session.get(TrustedAddress, (user_id, keys.client))
    if trusted is not None:
        trusted.last_success_at = now
        session.flush()
        return
    try:
        with session.begin_nested():
            session.add(TrustedAddress(user_id=user_id, address=keys.client, last_success_at=now))
    except IntegrityError:
        pass  # another replica recorded the same address first: the outcome is the same


def reset_account(session: Session, username: str, *, key: bytes) -> int:
    """Clear the account's counters and every address's counter for it (an admin's unlock)."""
    keys = counter_keys(key, username, "")
    result = session.execute(
        delete(LoginThrottle).where(
            ((LoginThrottle.scope == ACCOUNT) & (LoginThrottle.key == keys.account))
            | (
                (LoginThrottle.scope == PAIR)
                & LoginThrottle.key.startswith(keys.account + "\x1f", autoescape=True)
            )
        )
    )
    session.flush()
    return int(getattr(result, "rowcount", 0) or 0)
