"""Reading records: filtered pages for the API and audit console, and exports.

Exports carry every chain field, so whoever receives one can re-verify it with
:func:`appliance.audit.verify.verify_export` and the audit public key:

``jsonl``  one JSON object per line: the record fields of ``chain`` plus ``hash``; ``details`` and
           ``content`` as JSON values (re-encoding them canonically gives the hashed bytes).
``cef``    ArcSight Common Event Format, one event per line::

             CEF:0|Enclave|Enclave Appliance|<version>|<action>|<action>|<severity>|rt=<epoch ms>
             externalId=<seq> suser=<actor> act=<action> outcome=<outcome> [src=<ip>]
             cs1Label=target cs1=... cs2Label=requestId cs2=... cs3Label=details cs3=<json>
             cs4Label=content cs4=<json|null> cs5Label=prevHash cs5=... cs6Label=hash cs6=...
             flexString1Label=time flexString1=<exact time> flexString2Label=clientAddress flexString2=...

An export ``since`` a time starts at the first record at or after it and runs to the end, so it
is one contiguous piece of the chain.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Engine, select

from appliance.audit.chain import format_time, parse_time
from appliance.audit.events import AuditRecord
from appliance.audit.models import AuditEventRow
from appliance.audit.store import RowTuple, snapshot
from shared.errors import InputError
from shared.version import VERSION

__all__ = ["EXPORT_FORMATS", "AuditFilter", "Page", "cef_row", "export_lines", "format_record", "query_page"]

EXPORT_FORMATS = ("jsonl", "cef")
MAX_PAGE = 1000


@dataclass(frozen=True, kw_only=True)
class AuditFilter:
    """All given fields must match. ``action`` ending in ``.`` or ``*`` matches a prefix
    (``"auth."`` = every authentication event)."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    outcome: str | None = None
    request_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


@dataclass(frozen=True)
class Page:
    records: list[AuditRecord]
    # Pass as ``cursor`` to get the next page; None when this was the last one.
    next_cursor: int | None


def query_page(engine: Engine, filters: AuditFilter, *, limit: int = 100, cursor: int | None = None) -> Page:
    """Records matching ``filters``, newest first, ``limit`` at a time (``cursor``: seq to start below)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit must be between 1 and {MAX_PAGE}")
    q = select(*AuditEventRow.__table__.c).order_by(AuditEventRow.seq.desc()).limit(limit + 1)
    if cursor is not None:
        q = q.where(AuditEventRow.seq < cursor)
    f = filters
    for column, value in (
        (AuditEventRow.actor, f.actor),
        (AuditEventRow.target, f.target),
        (AuditEventRow.outcome, f.outcome),
        (AuditEventRow.request_id, f.request_id),
    ):
        if value is not None:
            q = q.where(column == value)
    if f.action is not None:
        if f.action.endswith(("*", ".")):
            prefix = f.action.rstrip("*")
            q = q.where(AuditEventRow.action.startswith(prefix, autoescape=True))
        else:
            q = q.where(AuditEventRow.action == f.action)
    if f.since is not None:
        q = q.where(AuditEventRow.time >= format_time(f.since))
    if f.until is not None:
        q = q.where(AuditEventRow.time < format_time(f.until))
    with engine.connect() as conn:
        rows = list(conn.execute(q))
    records = [AuditRecord.from_row(r) for r in rows[:limit]]
    return Page(records, records[-1].seq if len(rows) > limit else None)


def _jsonl(row: RowTuple) -> str:
    seq, time, actor, action, target, outcome, request_id, client, details, content, prev_hash, digest = row
    # Stored details/content are canonical JSON text already: splice them in unparsed.
    head = json.dumps(
        {
            "seq": seq,
            "time": time,
            "actor": actor,
            "action": action,
            "target": target,
            "outcome": outcome,
            "request_id": request_id,
            "client_address": client,
        },
        ensure_ascii=False,
    )
    tail = json.dumps({"prev_hash": prev_hash, "hash": digest})
    return f'{head[:-1]}, "details": {details}, "content": {content or "null"}, {tail[1:]}'


# Control characters other than CR/LF: the CEF spec has no escape for them and a raw ESC, BEL or NUL
# reaches the SIEM operator's terminal or truncates the line in C parsers. They are written as a
# backslash, ``u`` and four hex digits (the spec never puts a lone backslash before ``u``: a literal
# backslash is always written doubled), so the line reads back to the exact text and the export
# still verifies.
_CEF_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")


def _cef_controls(text: str) -> str:
    return _CEF_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _cef_header(text: str) -> str:
    return _cef_controls(text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " "))


def _cef_value(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n").replace("\r", "\\r")
    return _cef_controls(escaped)


def _cef(row: RowTuple) -> str:
    seq, time, actor, action, target, outcome, request_id, client, details, content, prev_hash, digest = row
    severity = 3 if outcome == "success" else 7 if outcome in ("failure", "denied") else 5
    millis = int(parse_time(time).timestamp() * 1000)
    ext = [
        ("rt", str(millis)),
        ("externalId", str(seq)),
        ("suser", actor),
        ("act", action),
        ("outcome", outcome),
    ]
    with contextlib.suppress(ValueError):
        ext.append(("src", str(ipaddress.ip_address(client))))
    for n, (label, value) in enumerate(
        (
            ("target", target),
            ("requestId", request_id),
            ("details", details),
            ("content", content or "null"),
            ("prevHash", prev_hash),
            ("hash", digest),
        ),
        1,
    ):
        ext += [(f"cs{n}Label", label), (f"cs{n}", value)]
    ext += [("flexString1Label", "time"), ("flexString1", time)]
    ext += [("flexString2Label", "clientAddress"), ("flexString2", client)]
    header = "|".join(
        [
            "CEF:0",
            "Enclave",
            "Enclave Appliance",
            VERSION,
            _cef_header(action),
            _cef_header(action),
            str(severity),
        ]
    )
    return header + "|" + " ".join(f"{k}={_cef_value(v)}" for k, v in ext)


_CEF_PAIR = re.compile(r"([A-Za-z0-9_.]+)=((?:\\.|[^\\])*?)(?= [A-Za-z0-9_.]+=|$)", re.DOTALL)
_CEF_UNESCAPE = re.compile(r"\\(u[0-9a-f]{4}|.)", re.DOTALL)
_CEF_ESCAPES = {"n": "\n", "r": "\r"}


def _cef_unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if len(code) == 5:
        return chr(int(code[1:], 16))
    return _CEF_ESCAPES.get(code, code)


def _cef_extension(line: str) -> dict[str, str]:
    # The extension follows the 7th unescaped pipe.
    pipes = [m.start() for m in re.finditer(r"(?<!\\)(?:\\\\)*\|", line)]
    if not line.startswith("CEF:") or len(pipes) < 7:
        raise ValueError("not a CEF line")
    ext = line[pipes[6] + 1 :]
    return {key: _CEF_UNESCAPE.sub(_cef_unescape, value) for key, value in _CEF_PAIR.findall(ext)}


def cef_row(line: str, where: str) -> RowTuple:
    """Parse an exported CEF line back into a stored row (for third-party verification)."""
    try:
        ext = _cef_extension(line.rstrip("\r\n"))
        labelled = {ext[f"cs{n}Label"]: ext[f"cs{n}"] for n in range(1, 7)}
        labelled |= {ext[f"flexString{n}Label"]: ext[f"flexString{n}"] for n in (1, 2)}
        content = labelled["content"]
        return (
            int(ext["externalId"]),
            labelled["time"],
            ext["suser"],
            ext["act"],
            labelled["target"],
            ext["outcome"],
            labelled["requestId"],
            labelled["clientAddress"],
            labelled["details"],
            None if content == "null" else content,
            labelled["prevHash"],
            labelled["hash"],
        )
    except (KeyError, ValueError):
        raise InputError(f"{where}: not an exported CEF audit record") from None


def format_record(fmt: str, row: RowTuple) -> str:
    if fmt == "jsonl":
        return _jsonl(row)
    if fmt == "cef":
        return _cef(row)
    raise InputError(f"unknown export format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})")


def export_lines(engine: Engine, fmt: str, *, since: dt.datetime | None = None) -> Iterator[str]:
    """Exported lines (without newlines), oldest first, read from one consistent snapshot."""
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})")
    return _export(engine, fmt, since)


def _export(engine: Engine, fmt: str, since: dt.datetime | None) -> Iterator[str]:
    with snapshot(engine) as snap:
        after = 0
        if since is not None:
            first = snap.one("SELECT MIN(seq) FROM audit_events WHERE time >= ?", (format_time(since),))
            if first is None or first[0] is None:
                return
            after = int(first[0]) - 1
        for row in snap.events(after):
            yield format_record(fmt, row)
