"""Engines and the unit of work.

``make_engine(url)`` returns a SQLAlchemy engine tuned for the backend: SQLite gets WAL,
``synchronous=FULL``, foreign keys and a busy timeout on every connection; PostgreSQL gets
``pool_pre_ping``. ``UnitOfWork`` opens one session per block of work and commits it or rolls it
back as a whole, so callers never leave half-written state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.errors import DatabaseError

__all__ = ["UnitOfWork", "is_sqlite", "make_engine"]


def is_sqlite(url_or_engine: str | Engine) -> bool:
    url = url_or_engine if isinstance(url_or_engine, str) else str(url_or_engine.url)
    return url.startswith("sqlite")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The stdlib driver opens an implicit transaction itself; we want SQLAlchemy to send BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # IMMEDIATE takes the write lock up front: two writers never deadlock upgrading a read lock.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url``; SQLite and PostgreSQL are supported."""
    if url.startswith("postgresql") and url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    try:
        if is_sqlite(url):
            engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_pre_ping=True, **kwargs)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise DatabaseError(f"cannot use database {url!r}: {exc}") from None
    return engine


class UnitOfWork:
    """Opens sessions on one engine; ``with uow() as session:`` commits or rolls back as a whole."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._factory = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def __call__(self) -> Iterator[Session]:
        session = self._factory()
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            # Driver messages can span lines (psycopg adds DETAIL/HINT); the CLI shows one.
            first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
            raise DatabaseError(f"database unavailable: {first}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
