"""Fixtures every test package shares.

Database tests take the ``db_url`` fixture, which runs them once on SQLite (a file in tmp_path)
and once on PostgreSQL (a fresh database per test, dropped afterwards). PostgreSQL is found at
``ENCLAVE_TEST_PG_URL`` (default: postgres@127.0.0.1:5432); when it cannot be reached those tests
are skipped with the reason — unless ``ENCLAVE_TEST_REQUIRE_PG=1`` (set by .ci/run), which turns
the skip into a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

PG_ADMIN_URL = os.environ.get("ENCLAVE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

_pg_reason: str | None = None
_pg_checked = False


def _pg_unavailable() -> str | None:
    global _pg_checked, _pg_reason
    if not _pg_checked:
        _pg_checked = True
        try:
            import sqlalchemy as sa

            engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
            engine.dispose()
        except Exception as exc:  # any failure means "no PostgreSQL here"
            _pg_reason = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
    return _pg_reason


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    reason = _pg_unavailable()
    if reason:
        if os.environ.get("ENCLAVE_TEST_REQUIRE_PG") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    import sqlalchemy as sa

    name = f"enclave_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'enclave.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Runs the test on both backends: SQLite (file) and PostgreSQL (fresh database)."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    request.applymarker(pytest.mark.postgres)
    return str(request.getfixturevalue("pg_url"))
