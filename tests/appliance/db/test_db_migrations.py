"""Migrations: up to head and back to base on both backends; models and migrations agree."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from appliance.db import migrate
from appliance.db.engine import make_engine
from appliance.db.schema import metadata
from shared.errors import DatabaseError


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_to_head_and_back_to_base(db_url: str) -> None:
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head()
    migrate.check(db_url)
    assert {"users", "teams", "api_tokens", "login_sessions", "policies", "roles"} <= _tables(db_url)
    migrate.downgrade(db_url, "base")
    assert migrate.current(db_url) is None
    assert _tables(db_url) <= {"alembic_version"}
    # And up again: downgrade left nothing behind that blocks a fresh upgrade.
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head()


def test_first_revision_id_is_fixed() -> None:
    script = migrate.script_directory()
    base = script.get_base()
    assert base == "0001_foundation"


def test_models_and_migrations_agree(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
            diff = compare_metadata(ctx, metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_roles_are_seeded(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            names = set(conn.execute(sa.text("select name from roles")).scalars())
    finally:
        engine.dispose()
    assert names == {"developer", "auditor", "admin"}


def test_database_newer_than_code_is_refused(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("update alembic_version set version_num = '9999_future'"))
    engine.dispose()
    for call in (lambda: migrate.current(db_url), lambda: migrate.upgrade(db_url), lambda: migrate.check(db_url)):
        with pytest.raises(DatabaseError, match="newer than the code"):
            call()


def test_foreign_database_is_refused(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table invoices (id integer primary key)"))
    engine.dispose()
    with pytest.raises(DatabaseError, match="not an Enclave database"):
        migrate.upgrade(db_url)
    assert _tables(db_url) == {"invoices"}


def test_check_demands_head(db_url: str) -> None:
    with pytest.raises(DatabaseError, match="empty"):
        migrate.check(db_url)


def test_unreachable_database_is_one_line_error() -> None:
    url = "postgresql+psycopg://nobody:secret-pw@127.0.0.1:1/none?connect_timeout=2"
    with pytest.raises(DatabaseError) as info:
        migrate.current(url)
    message = str(info.value)
    assert "cannot reach database" in message
    assert "secret-pw" not in message
    assert "\n" not in message


def test_sqlite_unreadable_path_is_database_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    with pytest.raises(DatabaseError, match="cannot reach database"):
        migrate.upgrade(url)


def test_migrations_ship_in_the_distribution() -> None:
    """The offline installer installs from wheels: migrations must be package data there."""
    root = Path(__file__).resolve().parents[3]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert "migrations*" in project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "*.mako" in project["tool"]["setuptools"]["package-data"]["*"]
    shipped = migrate.script_directory()
    assert (Path(shipped.dir) / "versions" / "__init__.py").is_file()
    assert {rev.revision for rev in shipped.walk_revisions()} >= {"0001_foundation"}


def test_alembic_command_line_for_developers(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    url = f"sqlite:///{tmp_path / 'dev.db'}"
    alembic = Path(sys.executable).with_name("alembic")
    env = {**os.environ, "ENCLAVE_DATABASE_URL": url}
    for argv in (["upgrade", "head"], ["check"]):
        done = subprocess.run([str(alembic), *argv], cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert migrate.current(url) == migrate.head()
