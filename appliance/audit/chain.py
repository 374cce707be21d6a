"""The chain: canonical encoding of an audit record and its hash.

Encoding (version 1), which a third party can re-implement in a few lines::

    record  = {"seq": int, "time": str, "actor": str, "action": str, "target": str,
               "outcome": str, "request_id": str, "client_address": str,
               "details": object, "content": object | null, "prev_hash": str}
    payload = b"enclave.audit.record.v1\\x00" + canonical_json(record)
    hash    = SHA-256(payload), lower-case hex

``canonical_json`` is ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)`` encoded as UTF-8; values are only strings, integers,
booleans, null, lists and objects with string keys — never floats, whose text form differs between
languages. ``time`` is UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The first record's ``prev_hash`` is 64
zeros. The prefix separates record hashes from every other hash Enclave makes (checkpoints sign a
different prefix), so a record can never be passed off as a checkpoint or the reverse.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

from shared.errors import InputError

__all__ = [
    "GENESIS_HASH",
    "RECORD_FIELDS",
    "RECORD_PREFIX",
    "canonical_json",
    "check_json_value",
    "format_time",
    "parse_time",
    "record_hash",
    "record_hash_fast",
    "row_hash",
]

RECORD_PREFIX = b"enclave.audit.record.v1\x00"
GENESIS_HASH = "0" * 64
RECORD_FIELDS = (
    "seq",
    "time",
    "actor",
    "action",
    "target",
    "outcome",
    "request_id",
    "client_address",
    "details",
    "content",
    "prev_hash",
)


def check_json_value(value: Any, where: str = "details") -> None:
    """Raise InputError unless ``value`` is made only of types the canonical encoding allows."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        raise InputError(f"audit {where}: floats are not allowed (use integers, e.g. milliseconds)")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json_value(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InputError(f"audit {where}: object keys must be strings, got {key!r}")
            check_json_value(item, f"{where}.{key}")
        return
    raise InputError(f"audit {where}: {type(value).__name__} is not allowed")


# One encoder for every call: json.dumps with non-default options builds a new one each time,
# which is a measurable share of an append.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    return _CANONICAL.encode(value)


def format_time(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        raise InputError("audit time must be timezone-aware")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def record_hash(record: Mapping[str, Any]) -> str:
    """Reference implementation: hash of a record given as plain values (details/content parsed)."""
    body = {name: record[name] for name in RECORD_FIELDS}
    return hashlib.sha256(RECORD_PREFIX + canonical_json(body).encode("utf-8")).hexdigest()


def record_hash_fast(
    seq: int,
    time: str,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    request_id: str,
    client_address: str,
    details_json: str,
    content_json: str | None,
    prev_hash: str,
) -> str:
    """The same hash as :func:`record_hash`, built from stored columns without parsing JSON.

    ``details_json`` and ``content_json`` are the canonical JSON texts as stored; the object is
    assembled with its keys already in sorted order. Verification runs this once per record, so it
    avoids ``json.dumps`` of a whole dict (tested equal to the reference on random records).
    """
    e = encode_basestring
    content = "null" if content_json is None else content_json
    text = (
        f'{{"action":{e(action)},"actor":{e(actor)},"client_address":{e(client_address)},'
        f'"content":{content},"details":{details_json},"outcome":{e(outcome)},'
        f'"prev_hash":{e(prev_hash)},"request_id":{e(request_id)},"seq":{seq},'
        f'"target":{e(target)},"time":{e(time)}}}'
    )
    return hashlib.sha256(RECORD_PREFIX + text.encode("utf-8")).hexdigest()


def row_hash(row: tuple[Any, ...]) -> str:
    """:func:`record_hash_fast` of a stored row ``(seq, time, ..., content, prev_hash, hash)``."""
    seq, time, actor, action, target, outcome, request_id, client, details, content, prev, _ = row
    return record_hash_fast(
        seq, time, actor, action, target, outcome, request_id, client, details, content, prev
    )
