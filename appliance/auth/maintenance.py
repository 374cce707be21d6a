"""Housekeeping for the credential tables: drop rows that can no longer matter.

Call it now and then (from a periodic housekeeping task); it takes the caller's Session and does not
commit. Failed-login counters for accounts and address pairs are kept until a success or an
admin unlock resets them — dropping them by age would quietly lift the 100-failure stop — but an
address window that has lapsed, an ended session and a long-expired or revoked token go.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, or_
from sqlalchemy.orm import Session

from appliance.auth import throttle
from appliance.db.models import ApiToken, LoginSession, LoginThrottle

__all__ = ["TOKEN_RETENTION", "purge"]

# Revoked and expired tokens stay listable (``token list --all``) this long.
TOKEN_RETENTION = dt.timedelta(days=90)


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def purge(session: Session, *, now: dt.datetime) -> dict[str, int]:
    """Delete dead rows; returns how many of each kind went."""
    sessions = session.execute(
        delete(LoginSession).where(or_(LoginSession.expires_at <= now, LoginSession.revoked_at.is_not(None)))
    )
    windows = session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.scope == throttle.ADDRESS,
            LoginThrottle.window_start <= now - dt.timedelta(seconds=throttle.ADDRESS_WINDOW_S),
        )
    )
    cutoff = now - TOKEN_RETENTION
    tokens = session.execute(
        delete(ApiToken).where(or_(ApiToken.expires_at <= cutoff, ApiToken.revoked_at <= cutoff))
    )
    session.flush()
    return {"login_sessions": _count(sessions), "address_windows": _count(windows), "api_tokens": _count(tokens)}
