"""Database operations of the audit log, on SQLAlchemy Core (the writer) and raw DB-API (readers).

Serializing appends: every append transaction first locks the one row of ``audit_chain_head``
(``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite ``make_engine`` opens every transaction with
``BEGIN IMMEDIATE``, which takes the database write lock), then reads the head *inside* that
transaction, writes the records and moves the head. Two appenders — threads, processes or replicas
on one PostgreSQL — can therefore never both extend the same head: seq never repeats or skips.

Reading (verify, export, query) uses a raw DB-API connection in one read-only snapshot: a
deferred ``BEGIN`` on SQLite (WAL readers do not block the writer, unlike ``BEGIN IMMEDIATE``) and
``REPEATABLE READ READ ONLY`` on PostgreSQL, with a server-side cursor for the long scans.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from appliance.audit.chain import GENESIS_HASH, record_hash_fast
from appliance.audit.events import PreparedEvent
from appliance.audit.models import AuditChainHead, AuditEventRow, AuditSealedRow
from appliance.db.engine import is_sqlite
from shared.errors import AuditUnavailableError

__all__ = ["EVENT_COLUMNS", "Snapshot", "append_prepared", "lock_head", "snapshot"]

EVENT_COLUMNS = (
    "seq, time, actor, action, target, outcome, request_id, client_address, details, content, prev_hash, hash"
)
RowTuple = tuple[Any, ...]

_events = cast(Table, AuditEventRow.__table__)
_head = cast(Table, AuditChainHead.__table__)
_sealed = cast(Table, AuditSealedRow.__table__)


def lock_head(conn: Connection, cursor: Any = None) -> tuple[int, str]:
    """Lock the chain head for this transaction and return (seq, hash).

    ``cursor``: a DB-API cursor of ``conn``'s connection, to read the head without SQLAlchemy's
    per-statement work (the group commit passes one)."""
    lock = " FOR UPDATE" if conn.dialect.name == "postgresql" else ""
    sql = f"SELECT seq, hash FROM audit_chain_head WHERE id = 1{lock}"
    if cursor is not None:
        cursor.execute(sql)
        found = cursor.fetchone()
        if found is not None:
            return int(found[0]), str(found[1])
    row = conn.exec_driver_sql(sql).first()
    if row is None:
        # Only an empty database lacks the row (the migration creates it); ON CONFLICT keeps two
        # first appenders from both inserting it.
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(dialect_insert(_head).values(id=1, seq=0, hash=GENESIS_HASH).on_conflict_do_nothing())
        row = conn.exec_driver_sql(f"SELECT seq, hash FROM audit_chain_head WHERE id = 1{lock}").first()
        if row is None:
            raise AuditUnavailableError("audit chain head cannot be created")
        if row.seq == 0 and conn.execute(select(_events.c.seq).limit(1)).first() is not None:
            raise AuditUnavailableError("audit chain head row is missing: run `enclave audit verify`")
    return int(row.seq), str(row.hash)


def _driver_sql(conn: Connection, sql: str) -> str:
    return sql if conn.dialect.paramstyle == "qmark" else sql.replace("?", "%s")


_INSERT_EVENTS = f"INSERT INTO audit_events ({EVENT_COLUMNS}) VALUES ({', '.join('?' * 12)})"
_INSERT_SEALED = (
    "INSERT INTO audit_sealed (ref, time, master_key_id, wrapped_key, ciphertext, purged_time) "
    "VALUES (?, ?, ?, ?, ?, NULL)"
)
_MOVE_HEAD = "UPDATE audit_chain_head SET seq = ?, hash = ? WHERE id = 1"


def append_prepared(
    conn: Connection, prepared: Sequence[PreparedEvent], now: Callable[[], str]
) -> tuple[list[int], int, str]:
    """Chain and insert ``prepared`` in the caller's transaction; returns (seqs, head seq, head hash).

    The records of one call share one time: they commit together. Four statements on the
    connection's own DB-API cursor — read the head, one executemany of the records (and one of
    sealed content), move the head — because this runs once per group commit and SQLAlchemy's
    per-statement work would be a large share of its CPU. The driver caches the prepared
    statements (sqlite3 per connection; psycopg prepares repeated queries), so the same four texts
    are parsed once per pooled connection.
    """
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        seq, head_hash = lock_head(conn, cursor)
        time = now()
        rows: list[tuple[Any, ...]] = []
        sealed: list[tuple[Any, ...]] = []
        first = seq + 1
        for p in prepared:
            seq += 1
            # The hashed fields are the row's columns up to prev_hash; the row adds the hash.
            fields = (
                seq,
                time,
                p.actor,
                p.action,
                p.target,
                p.outcome,
                p.request_id,
                p.client_address,
                p.details_json,
                p.content_json,
                head_hash,
            )
            digest = record_hash_fast(*fields)
            rows.append((*fields, digest))
            if p.sealed is not None:
                b = p.sealed
                sealed.append((b.ref, time, b.master_key_id, b.wrapped_key, b.ciphertext))
            head_hash = digest
        if sealed:
            cursor.executemany(_driver_sql(conn, _INSERT_SEALED), sealed)
        cursor.executemany(_driver_sql(conn, _INSERT_EVENTS), rows)
        cursor.execute(_driver_sql(conn, _MOVE_HEAD), (seq, head_hash))
    except conn.dialect.loaded_dbapi.Error as exc:
        # What SQLAlchemy would have raised (callers turn SQLAlchemyError into "unavailable").
        raise DBAPIError.instance(None, None, exc, conn.dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()
    return list(range(first, seq + 1)), seq, head_hash


class Snapshot:
    """A read-only, consistent view of the audit tables through a raw DB-API connection."""

    def __init__(self, dbapi_conn: Any, postgres: bool) -> None:
        self._conn = dbapi_conn
        self._pg = postgres
        self._mark = "%s" if postgres else "?"

    def _sql(self, text: str) -> str:
        return text.replace("?", self._mark)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[RowTuple]:
        cur = self._conn.cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def one(self, sql: str, params: Sequence[Any] = ()) -> RowTuple | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def stream(self, sql: str, params: Sequence[Any] = (), *, batch: int = 10_000) -> Iterator[RowTuple]:
        """Rows of a long query, fetched ``batch`` at a time (server-side on PostgreSQL)."""
        cur = self._conn.cursor(name="enclave_audit_scan") if self._pg else self._conn.cursor()
        try:
            if self._pg:
                cur.itersize = batch
            cur.execute(self._sql(sql), tuple(params))
            while True:
                chunk = cur.fetchmany(batch)
                if not chunk:
                    return
                yield from chunk
        finally:
            cur.close()

    def head(self) -> tuple[int, str] | None:
        row = self.one("SELECT seq, hash FROM audit_chain_head WHERE id = 1")
        return None if row is None else (int(row[0]), str(row[1]))

    def checkpoints(self) -> list[RowTuple]:
        return self.all("SELECT seq, head_hash, time, key_id, signature FROM audit_checkpoints ORDER BY seq")

    def events(self, after_seq: int = 0) -> Iterator[RowTuple]:
        return self.stream(
            f"SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > ? ORDER BY seq", (after_seq,)
        )

    def event_at(self, seq: int) -> RowTuple | None:
        return self.one(f"SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq = ?", (seq,))

    def seq_of_hash(self, digest: str) -> int | None:
        row = self.one("SELECT seq FROM audit_events WHERE hash = ? ORDER BY seq LIMIT 1", (digest,))
        return None if row is None else int(row[0])


@contextmanager
def snapshot(engine: Engine) -> Iterator[Snapshot]:
    raw = engine.raw_connection()
    try:
        dbapi: Any = raw.driver_connection
        postgres = not is_sqlite(engine)
        if postgres:
            dbapi.rollback()
            cur = dbapi.cursor()
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.close()
        else:
            dbapi.execute("BEGIN")
        try:
            yield Snapshot(dbapi, postgres)
        finally:
            if postgres:
                dbapi.rollback()
            else:
                dbapi.execute("ROLLBACK")
    finally:
        raw.close()
