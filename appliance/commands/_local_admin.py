"""What the local admin commands (init, user, token) share: who acts, and recording changes.

The operator at the appliance's own shell acts with the data directory's authority; the audit
log names them ``cli:<os user>``. Each change is appended to the audit log inside the same
transaction as the change itself, so neither lands without the other.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from appliance.audit import AuditEvent, AuditLog
from appliance.auth.change import Change
from appliance.config import Settings

__all__ = ["cli_actor", "format_time", "record_change"]


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry for this uid (containers)
        return f"cli:uid-{os.getuid()}"


def record_change(settings: Settings, engine: Engine, session: Session, change: Change) -> None:
    """Append ``change`` to the audit log in ``session``'s transaction (fails closed)."""
    log = AuditLog.from_settings(settings, engine)
    log.append_in(
        session,
        AuditEvent(
            action=change.action,
            actor=cli_actor(),
            target=change.target,
            details={"old": change.old, "new": change.new},
        ),
    )


def format_time(moment: dt.datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
