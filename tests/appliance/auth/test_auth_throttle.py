"""Login throttling: backoff per account and address, a per-address limit, a hard stop at 100.

The clock is injected (``now``): nothing sleeps, and no assertion is about elapsed time.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from appliance.auth import admin, login, throttle
from appliance.db.engine import UnitOfWork
from appliance.db.models import LoginThrottle
from shared.errors import AuthError, ThrottledError
from tests.helpers.appliance_db import T0, THROTTLE_KEY, at, migrated_uow

PASSWORD = "violet-harbour-tangent-57"
HOME, ATTACKER = "192.0.2.10", "198.51.100.66"


@pytest.fixture
def uow(db_url: str) -> Iterator[UnitOfWork]:
    with migrated_uow(db_url) as unit:
        with unit() as s:
            admin.create_team(s, "default", now=T0)
            admin.create_user(s, "alice", role="developer", password=PASSWORD, now=T0)
        yield unit


def attempt(uow: UnitOfWork, password: str, address: str, now: dt.datetime, user: str = "alice") -> str:
    """One login attempt, committed like the API does; returns "ok" or the error's reason."""
    with uow() as s:
        try:
            login(s, user, password, address=address, throttle_key=THROTTLE_KEY, now=now)
        except ThrottledError as exc:
            assert 0 < exc.retry_after <= throttle.MAX_BACKOFF_S
            return exc.reason
        except AuthError as exc:
            return exc.reason  # the failure counters are committed with the session
    return "ok"


def test_backoff_schedule_is_exponential_and_capped() -> None:
    free = [throttle.backoff_s(n) for n in range(throttle.FREE_ATTEMPTS)]
    assert free == [0.0] * throttle.FREE_ATTEMPTS
    waits = [throttle.backoff_s(n) for n in range(throttle.FREE_ATTEMPTS, 100)]
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(waits) == throttle.MAX_BACKOFF_S == 900
    assert waits == sorted(waits)


def test_failures_engage_backoff_and_it_lapses(uow: UnitOfWork) -> None:
    for i in range(throttle.FREE_ATTEMPTS):
        assert attempt(uow, "wrong-guess-number-x", ATTACKER, at(i)) == "bad_password"
    last = at(throttle.FREE_ATTEMPTS - 1)
    # Even the right password is not tried while backing off: the attempt is refused, uncounted.
    assert attempt(uow, PASSWORD, ATTACKER, last) == "throttled"
    assert attempt(uow, PASSWORD, ATTACKER, last + dt.timedelta(seconds=0.5)) == "throttled"
    assert attempt(uow, PASSWORD, ATTACKER, last + dt.timedelta(seconds=1)) == "ok"
    # Success resets the counters.
    for i in range(throttle.FREE_ATTEMPTS):
        assert attempt(uow, "wrong-guess-number-y", ATTACKER, at(100 + i)) == "bad_password"


def test_unknown_user_is_throttled_like_a_real_one(uow: UnitOfWork) -> None:
    results = [attempt(uow, "whatever-password-1", ATTACKER, at(i / 10), user="nobody") for i in range(6)]
    assert results == ["unknown_user"] * 5 + ["throttled"]


def test_attacker_cannot_lock_out_the_user_at_a_familiar_address(uow: UnitOfWork) -> None:
    assert attempt(uow, PASSWORD, HOME, at(0)) == "ok"
    for i in range(8):
        attempt(uow, "guess-guess-guess-" + str(i), ATTACKER, at(10 + i * 0.01))
    assert attempt(uow, PASSWORD, ATTACKER, at(11)) == "throttled"
    assert attempt(uow, PASSWORD, HOME, at(11)) == "ok"


def _keys(user: str, address: str) -> throttle.CounterKeys:
    return throttle.counter_keys(THROTTLE_KEY, user, address)


def _set_counter(uow: UnitOfWork, scope: str, key: str, failures: int, last: dt.datetime) -> None:
    with uow() as s:
        row = s.scalar(select(LoginThrottle).where(LoginThrottle.scope == scope, LoginThrottle.key == key))
        if row is None:
            row = LoginThrottle(scope=scope, key=key)
            s.add(row)
        row.failures, row.window_start, row.last_failure_at = failures, last, last


def test_hard_stop_at_100_consecutive_failures(uow: UnitOfWork) -> None:
    assert attempt(uow, PASSWORD, HOME, at(0)) == "ok"
    # 99 earlier failures from all over; the 100th comes from the attacker after the capped wait.
    _set_counter(uow, "account", _keys("alice", ATTACKER).account, 99, at(1))
    assert attempt(uow, "one-more-guess-here", ATTACKER, at(1 + 900)) == "bad_password"
    later = at(1 + 900 + 24 * 3600)
    assert attempt(uow, PASSWORD, ATTACKER, later) == "locked"
    assert attempt(uow, PASSWORD, "203.0.113.1", later) == "locked"
    # The user's familiar address still works, and an admin can unlock the account for everyone.
    assert attempt(uow, PASSWORD, HOME, later) == "ok"
    _set_counter(uow, "pair", _keys("alice", ATTACKER).pair, 100, later)
    assert attempt(uow, PASSWORD, ATTACKER, later) == "locked"
    with uow() as s:
        change = admin.unlock_user(s, "alice", throttle_key=THROTTLE_KEY, now=later)
    assert change.old == {"throttle_counters": 1}
    assert attempt(uow, PASSWORD, ATTACKER, later) == "ok"


def test_never_more_than_100_consecutive_failures(uow: UnitOfWork) -> None:
    """Drive the real login as fast as the throttle lets an attacker, from one address."""
    now, failures, outcomes = T0, 0, set()
    for _ in range(400):
        with uow() as s:
            try:
                login(s, "alice", f"guess-number-{failures:06d}", address=ATTACKER, throttle_key=THROTTLE_KEY, now=now)
            except ThrottledError as exc:
                outcomes.add(exc.reason)
                if exc.reason == "locked":
                    break
                now += dt.timedelta(seconds=exc.retry_after)
            except AuthError:
                failures += 1
    assert failures == throttle.MAX_CONSECUTIVE_FAILURES
    assert outcomes == {"throttled", "locked"}
    # Roughly 21 hours of capped waits, never a wait above 15 minutes (asserted in attempt()).
    assert now - T0 > dt.timedelta(hours=20)


def test_per_address_limit_across_accounts(uow: UnitOfWork) -> None:
    _set_counter(uow, "address", _keys("alice", ATTACKER).address, throttle.ADDRESS_MAX_FAILURES - 1, at(0))
    assert attempt(uow, "spray-password-0001", ATTACKER, at(1), user="bob") == "unknown_user"
    assert attempt(uow, PASSWORD, ATTACKER, at(2)) == "throttled"
    assert attempt(uow, PASSWORD, HOME, at(2)) == "ok"  # another address is unaffected
    assert attempt(uow, PASSWORD, ATTACKER, at(throttle.ADDRESS_WINDOW_S)) == "ok"  # the window lapsed
    with uow() as s:
        row = s.scalar(select(LoginThrottle).where(LoginThrottle.scope == "address"))
        assert row is not None and row.failures == throttle.ADDRESS_MAX_FAILURES


def test_parallel_failures_all_count(uow: UnitOfWork) -> None:
    """Replicas share the counters: simultaneous failures are neither lost nor double-counted."""
    n = throttle.FREE_ATTEMPTS - 1
    barrier = threading.Barrier(n)

    def one(i: int) -> str:
        barrier.wait()
        return attempt(uow, f"parallel-guess-{i:04d}", f"203.0.113.{i}", at(0))

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    assert results == ["bad_password"] * n
    with uow() as s:
        account = s.scalar(select(LoginThrottle).where(LoginThrottle.scope == "account"))
        assert account is not None and account.failures == n
