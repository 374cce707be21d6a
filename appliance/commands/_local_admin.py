"""What the local admin commands (init, user, team, token, model, demo) share: who acts, recording
changes, the database record of an installed model, and their ``--data`` option and table output.

The operator at the appliance's own shell acts with the data directory's authority; the audit
log names them ``cli:<os user>``. Each change is appended to the audit log inside the same
transaction as the change itself, so neither lands without the other.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from appliance.audit import AuditEvent, AuditLog
from appliance.auth.change import Change
from appliance.config import Settings

if TYPE_CHECKING:  # the model package pulls in numpy and onnx: not for `enclave user list`
    from appliance.model.bundle import Bundle

__all__ = [
    "DATA_HELP",
    "action_subparsers",
    "cli_actor",
    "format_time",
    "model_installed",
    "print_table",
    "record_change",
]

DATA_HELP = "data directory (default: $ENCLAVE_DATA or the platform's)"


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


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """A header row and rows, in left-aligned columns two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def action_subparsers(
    parser: argparse.ArgumentParser,
) -> tuple[argparse._SubParsersAction[argparse.ArgumentParser], argparse.ArgumentParser]:
    """``parser``'s ACTION sub-commands and the parent parser each takes, so that ``--data DIR`` goes
    before or after the action (``enclave user --data D list`` = ``enclave user list --data D``)."""
    parser.add_argument("--data", metavar="DIR", help=DATA_HELP)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS, help=DATA_HELP)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    return sub, common


def model_installed(session: Session, settings: Settings, bundle: Bundle, *, now: dt.datetime) -> Change:
    """Record ``bundle`` as installed under ``settings``' models directory (the import's
    ``before_install``: the row commits only if the copy that follows succeeds)."""
    from appliance.auth import admin

    return admin.register_model(
        session,
        name=bundle.name,
        version=str(bundle.version),
        path=str(settings.models_dir / bundle.name / str(bundle.version)),
        manifest_sha256=bundle.manifest.digest,
        now=now,
        details={
            "key_id": bundle.manifest.key_id,
            **{k: bundle.info.get(k) for k in ("quant", "dtype", "stages")},
        },
    )
