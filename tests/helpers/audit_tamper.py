"""What an attacker with write access to the database does: drop the append-only triggers, then
edit audit rows directly. Tests use it to check that ``verify`` notices."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from appliance.audit.chain import row_hash
from appliance.audit.store import EVENT_COLUMNS

__all__ = ["SWAP_COLUMNS", "rehash", "tampering"]

# Every column but seq: swapping these between two rows moves the records, keeping the seqs.
SWAP_COLUMNS = [c.strip() for c in EVENT_COLUMNS.split(",")][1:]


@contextmanager
def tampering(engine: Engine) -> Iterator[Connection]:
    """A transaction with the append-only guards dropped (as the database owner could)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            for table in ("audit_events", "audit_checkpoints"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        else:
            for table in ("audit_events", "audit_checkpoints"):
                for verb in ("update", "delete"):
                    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
        yield conn


def rehash(conn: Connection, seq: int, prev_hash: str | None = None) -> str:
    """Recompute row ``seq``'s hash (optionally after changing its prev_hash) as a forger would."""
    row = conn.exec_driver_sql(f"SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq = {int(seq)}").one()
    prev = row[10] if prev_hash is None else prev_hash
    digest = row_hash((*tuple(row)[:10], prev, None))
    conn.exec_driver_sql(
        f"UPDATE audit_events SET prev_hash = '{prev}', hash = '{digest}' WHERE seq = {int(seq)}"
    )
    return digest
