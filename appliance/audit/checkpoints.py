"""Signed checkpoints: Ed25519 over (seq, head hash, time).

    message = b"enclave.audit.checkpoint.v1\\x00"
              + canonical_json({"head_hash": hex, "seq": int, "time": "...Z"})

A checkpoint exported to a file (JSON: ``seq``, ``head_hash``, ``time``, ``key_id``,
``signature`` hex) lets anyone holding the public key prove, off the box, that the log once
reached ``seq`` with that head — so a log later cut short or rewritten before ``seq`` is caught.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Table, func, insert, select

from appliance.audit.chain import canonical_json
from appliance.audit.keys import AuditKeys
from appliance.audit.models import AuditCheckpointRow
from shared.errors import InputError

__all__ = [
    "CHECKPOINT_PREFIX",
    "WITNESS_FILE",
    "Checkpoint",
    "read_checkpoint_file",
    "sign_checkpoint",
    "witness_checkpoint",
    "write_checkpoint_file",
]

# The latest signed checkpoint, kept outside the database (in the data directory): someone who can
# write the database but not this file cannot cut the log short, or wipe it, unnoticed by
# `enclave audit verify`. Root can rewrite both; only a checkpoint exported off the box defeats root.
WITNESS_FILE = "audit-checkpoint.json"

CHECKPOINT_PREFIX = b"enclave.audit.checkpoint.v1\x00"
_table = cast(Table, AuditCheckpointRow.__table__)


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    seq: int
    head_hash: str
    time: str
    key_id: str
    signature: str

    def message(self) -> bytes:
        body = {"head_hash": self.head_hash, "seq": self.seq, "time": self.time}
        return CHECKPOINT_PREFIX + canonical_json(body).encode("utf-8")

    def signature_valid(self, keys: AuditKeys) -> bool:
        if self.key_id != keys.key_id:
            return False
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            return False
        return keys.verify(signature, self.message())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_mapping(cls, data: Any, source: str = "checkpoint") -> Checkpoint:
        try:
            cp = cls(
                seq=data["seq"],
                head_hash=data["head_hash"],
                time=data["time"],
                key_id=data["key_id"],
                signature=data["signature"],
            )
        except (KeyError, TypeError):
            raise InputError(
                f"{source}: not a checkpoint (needs seq, head_hash, time, key_id, signature)"
            ) from None
        if not isinstance(cp.seq, int) or isinstance(cp.seq, bool) or cp.seq < 0:
            raise InputError(f"{source}: seq must be a non-negative integer")
        if not all(isinstance(v, str) for v in (cp.head_hash, cp.time, cp.key_id, cp.signature)):
            raise InputError(f"{source}: head_hash, time, key_id and signature must be strings")
        return cp

    @classmethod
    def from_row(cls, row: Any) -> Checkpoint:
        seq, head_hash, time, key_id, signature = row
        return cls(seq=int(seq), head_hash=head_hash, time=time, key_id=key_id, signature=signature)


def sign_checkpoint(keys: AuditKeys, seq: int, head_hash: str, time: str) -> Checkpoint:
    unsigned = Checkpoint(seq=seq, head_hash=head_hash, time=time, key_id=keys.key_id, signature="")
    signature = keys.sign(unsigned.message()).hex()
    return Checkpoint(seq=seq, head_hash=head_hash, time=time, key_id=keys.key_id, signature=signature)


def latest_checkpoint(conn: Connection) -> Checkpoint | None:
    last = conn.execute(select(func.max(_table.c.seq))).scalar()
    if last is None:
        return None
    row = conn.execute(
        select(_table.c.seq, _table.c.head_hash, _table.c.time, _table.c.key_id, _table.c.signature).where(
            _table.c.seq == last
        )
    ).one()
    return Checkpoint.from_row(tuple(row))


def store_checkpoint(conn: Connection, keys: AuditKeys, seq: int, head_hash: str, time: str) -> Checkpoint:
    """Sign and insert a checkpoint of the head locked in ``conn``'s transaction (or return the one
    already stored for that seq)."""
    last = latest_checkpoint(conn)
    if last is not None and last.seq == seq:
        return last
    cp = sign_checkpoint(keys, seq, head_hash, time)
    conn.execute(insert(_table).values(**asdict(cp)))
    return cp


def write_checkpoint_file(cp: Checkpoint, path: Path) -> None:
    """Write atomically: a reader never sees half a checkpoint."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(cp.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint_file(path: Path) -> Checkpoint:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read checkpoint: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{path}: not a JSON checkpoint file") from None
    return Checkpoint.from_mapping(data, str(path))


def witness_checkpoint(cp: Checkpoint, path: Path) -> bool:
    """Keep ``cp`` in the witness file at ``path`` unless the file already holds a later one (other
    processes and replicas write it too; it never moves back). True if written."""
    path = Path(path)
    if path.exists():
        try:
            if read_checkpoint_file(path).seq >= cp.seq:
                return False
        except InputError:
            pass  # unreadable: replace it with a good one
    path.parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint_file(cp, path)
    return True
