"""A read-only unit of work for the per-request look-ups (the bearer token's principal, readiness).

On SQLite every transaction of the appliance's engine starts with ``BEGIN IMMEDIATE`` — right for
writers, but it would make each request's token look-up queue for the write lock behind the audit
writer's group commit (and its fsync), and SQLite's busy handler sleeps in coarse steps while it
waits. WAL readers need no lock at all, so reads get their own engine on the same file: no
``BEGIN IMMEDIATE``, ``PRAGMA query_only`` so nothing can be written through it by mistake. A read
sees every committed change (revocation and expiry still take effect on the next request).

On PostgreSQL reads never wait for writers; the ordinary unit of work is used.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event

from appliance.db.engine import UnitOfWork, is_sqlite

__all__ = ["read_only_uow"]


def _read_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def read_only_uow(uow: UnitOfWork) -> UnitOfWork:
    """A unit of work for reads on ``uow``'s database (``uow`` itself unless it is SQLite)."""
    if not is_sqlite(uow.engine):
        return uow
    # As many pooled connections as the worker threads that authenticate (anyio's default limit is
    # 40): under load, each look-up then reuses an open connection instead of opening one and
    # running its PRAGMAs.
    engine = create_engine(uow.engine.url, connect_args={"timeout": 30}, pool_size=40, max_overflow=10)
    event.listen(engine, "connect", _read_pragmas)
    return UnitOfWork(engine)
