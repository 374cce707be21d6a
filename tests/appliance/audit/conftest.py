"""Audit fixtures: a database migrated to head (SQLite and PostgreSQL), in-memory keys, a log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from appliance.audit import AuditKeys, AuditLog
from appliance.db import migrate
from appliance.db.engine import make_engine


@pytest.fixture(scope="session")
def keys() -> AuditKeys:
    return AuditKeys.generate()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    migrate.upgrade(db_url)
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    migrate.upgrade(sqlite_url)
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


@pytest.fixture
def log(engine: Engine, keys: AuditKeys) -> Iterator[AuditLog]:
    with AuditLog(engine, keys, checkpoint_every=10_000) as audit:
        yield audit


@pytest.fixture
def sqlite_log(sqlite_engine: Engine, keys: AuditKeys) -> Iterator[AuditLog]:
    """For behaviour that does not depend on the backend."""
    with AuditLog(sqlite_engine, keys, checkpoint_every=10_000) as audit:
        yield audit
