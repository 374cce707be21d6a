"""``enclave audit verify|export|checkpoint|purge``.

enclave audit verify [--checkpoint FILE] [--data DIR]
    checks every record, checkpoint and the chain head; prints ``N/N events valid`` and the last
    signed checkpoint, or fails naming the first bad seq and what is wrong
enclave audit verify --export FILE --public-key FILE [--checkpoint FILE]
    the same for an exported JSONL or CEF file, off the box (no data directory needed)
enclave audit export --format jsonl|cef [--since T] [--out FILE] [--data DIR]
enclave audit checkpoint [--export FILE] [--data DIR]
enclave audit purge --before T [--data DIR]
    crypto-shred sealed content captured before T (ISO 8601 date/time, or an age such as 90d);
    the records stay and still verify; the purge is itself recorded (who, cut-off, range)
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance.audit import (
    EXPORT_FORMATS,
    AuditKeys,
    AuditLog,
    VerifyReport,
    load_public_key,
    parse_cutoff,
    read_checkpoint_file,
    verify_export_file,
    write_checkpoint_file,
)
from appliance.db.datadir import load_data_dir, open_database
from shared.errors import InputError, IntegrityError

__all__ = ["register"]


def _data_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, help="data directory (default: $ENCLAVE_DATA)")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)

    verify = sub.add_parser("verify", help="verify the chain, checkpoints and head")
    _data_arg(verify)
    verify.add_argument(
        "--checkpoint", type=Path, help="an exported checkpoint file to check the log against"
    )
    verify.add_argument(
        "--export", type=Path, help="verify this exported JSONL/CEF file instead of the database"
    )
    verify.add_argument("--public-key", type=Path, help="audit public key (audit_signing.pub), with --export")
    verify.add_argument(
        "--partial",
        action="store_true",
        help="with --export: the export was made with --since (starts mid-chain)",
    )
    verify.set_defaults(func=_verify)

    export = sub.add_parser("export", help="export records with their chain fields")
    _data_arg(export)
    export.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    export.add_argument("--since", help="first time to include (ISO 8601; UTC unless it says otherwise)")
    export.add_argument("--out", type=Path, help="write here (atomically) instead of standard output")
    export.set_defaults(func=_export)

    checkpoint = sub.add_parser("checkpoint", help="sign a checkpoint of the current head now")
    _data_arg(checkpoint)
    checkpoint.add_argument("--export", type=Path, help="also write the checkpoint to this file")
    checkpoint.set_defaults(func=_checkpoint)

    purge = sub.add_parser("purge", help="crypto-shred sealed content older than a cut-off")
    _data_arg(purge)
    purge.add_argument(
        "--before",
        required=True,
        help="shred content captured before this: ISO 8601 (2026-01-31, UTC unless stated) or an age (90d, 12h)",
    )
    purge.set_defaults(func=_purge)


@contextmanager
def _open_log(data: Path | None) -> Iterator[AuditLog]:
    settings = load_data_dir(data)
    with open_database(settings) as (engine, _), AuditLog.from_settings(settings, engine) as log:
        yield log


def _report(report: VerifyReport) -> int:
    print(report.summary())
    if report.problem is not None:
        raise IntegrityError(f"audit log does not verify: {report.problem}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    checkpoint = read_checkpoint_file(args.checkpoint) if args.checkpoint else None
    if args.export is not None:
        if args.public_key is None:
            raise InputError(
                "--export needs --public-key (the audit_signing.pub the records are checked against)"
            )
        keys = AuditKeys(public_key=load_public_key(args.public_key))
        return _report(
            verify_export_file(args.export, keys=keys, checkpoint=checkpoint, partial=args.partial)
        )
    if args.public_key is not None:
        raise InputError(
            "--public-key is for --export; the database is checked with the data directory's key"
        )
    with _open_log(args.data) as log:
        return _report(log.verify(checkpoint=checkpoint))


def _parse_since(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--since {text!r} is not an ISO 8601 time (e.g. 2026-01-31T09:00:00Z)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _export(args: argparse.Namespace) -> int:
    since = _parse_since(args.since) if args.since else None
    with _open_log(args.data) as log:
        lines = log.export(args.format, since=since)
        if args.out is None:
            for line in lines:
                sys.stdout.write(line + "\n")
            return 0
        out: Path = args.out
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        except OSError as exc:
            raise InputError(f"{out}: cannot write: {exc.strerror}") from None
        try:
            count = 0
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                for line in lines:
                    f.write(line + "\n")
                    count += 1
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        print(f"exported {count} records to {out}")
        return 0


def _checkpoint(args: argparse.Namespace) -> int:
    with _open_log(args.data) as log:
        cp = log.checkpoint()
        if args.export is not None:
            try:
                write_checkpoint_file(cp, args.export)
            except OSError as exc:
                raise InputError(f"{args.export}: cannot write checkpoint: {exc.strerror}") from None
        print(f"checkpoint: seq {cp.seq} at {cp.time}, head {cp.head_hash}, key {cp.key_id}")
        if args.export is not None:
            print(f"written to {args.export}")
        return 0


def _operator() -> str:
    """Who ran the command, as the audit record's actor: the operating-system account."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry and no $USER (some containers)
        return f"cli:uid-{os.getuid()}"


def _purge(args: argparse.Namespace) -> int:
    before = parse_cutoff(args.before, now=dt.datetime.now(dt.UTC))
    with _open_log(args.data) as log:
        count = log.purge_sealed(before, actor=_operator(), reason="enclave audit purge")
    print(f"purged sealed content of {count} records captured before {before:%Y-%m-%dT%H:%M:%SZ}")
    return 0
