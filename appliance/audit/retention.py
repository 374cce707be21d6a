"""Retention of sealed content: crypto-shred what is older than a cut-off, by hand or by policy.

By hand: ``enclave audit purge --before T`` where T is an ISO 8601 date/time or an age such as
``90d`` (see :func:`parse_cutoff`). By policy: ``audit_sealed_retention_days`` in the settings
(0, the default, keeps sealed content forever); the serve runtime applies it periodically::

    from appliance.audit import apply_sealed_retention

    purged = apply_sealed_retention(audit_log, settings)   # e.g. once an hour, from a thread
    # None: retention is off; otherwise the number of records whose content was shredded

It raises :class:`~shared.errors.AuditUnavailableError` when the store cannot commit (a periodic
caller logs that and tries again at its next tick; nothing was shredded). It records
``audit.content.purged`` with actor ``system:retention`` only when it shredded something, so an
hourly timer does not fill the chain with empty purges. Only the wrapped data keys are
destroyed: every record, and therefore the chain, stays verifiable (see :mod:`.capture`).
"""

from __future__ import annotations

import datetime as dt
import re

from appliance.audit.log import AuditLog
from appliance.config import Settings
from shared.errors import InputError

__all__ = ["RETENTION_ACTOR", "apply_sealed_retention", "parse_cutoff"]

RETENTION_ACTOR = "system:retention"

_AGE = re.compile(r"(\d+)\s*([wdhms])")
_UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_cutoff(text: str, *, now: dt.datetime) -> dt.datetime:
    """``text`` as an aware UTC moment: an ISO 8601 date or date-time (UTC unless it says
    otherwise; a bare date means its midnight), or an age before ``now`` — ``90d``, ``12h``,
    ``2w``, ``30m``, ``45s``. A moment after ``now`` is refused: purging "everything before next
    year" is a typo far more often than an intent, and it cannot be undone."""
    raw = text.strip()
    age = _AGE.fullmatch(raw.lower())
    if age is not None:
        moment = now - dt.timedelta(seconds=int(age.group(1)) * _UNIT_SECONDS[age.group(2)])
    else:
        try:
            moment = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise InputError(
                f"{text!r} is neither an ISO 8601 time (2026-01-31, 2026-01-31T09:00Z) "
                "nor an age (90d, 12h, 2w)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
    if moment > now:
        raise InputError(f"{text!r} is in the future ({moment.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ})")
    return moment.astimezone(dt.UTC)


def apply_sealed_retention(
    log: AuditLog, settings: Settings, *, now: dt.datetime | None = None
) -> int | None:
    """Shred sealed content older than ``settings.audit_sealed_retention_days``.

    Returns None when retention is off (0 days), else how many records' content was shredded.
    A missed run is caught up by the next one: the cut-off is an age, not a moment.
    """
    days = settings.audit_sealed_retention_days
    if days <= 0:
        return None
    moment = now if now is not None else dt.datetime.now(dt.UTC)
    return log.purge_sealed(
        moment - dt.timedelta(days=days),
        actor=RETENTION_ACTOR,
        reason=f"retention: sealed content is kept {days} days",
        skip_if_none=True,
    )
