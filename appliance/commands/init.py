"""``enclave init --data DIR``: a new data directory, built whole or not at all.

Everything is built in a temporary directory beside ``DIR`` and renamed onto it at the end, so a
failure at any step leaves nothing behind (an existing, empty ``DIR`` stays as it was). The steps
are the functions in :data:`STEPS`, run in order on the temporary directory's settings; a part of
the appliance that needs something made at init time appends one function there. Last, the first
admin is created with a generated one-time password, printed once, which must be changed at first
login (until then that account can do nothing but change it).

``enclave init --data DIR --upgrade`` instead migrates an existing data directory's database to
this code's schema.

With ``--database-url`` (PostgreSQL, for several replicas) the database lives outside the
directory; it must not already hold users, so a second ``init`` cannot silently take over a
running installation.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import tomli_w
from sqlalchemy import func, inspect, select

from appliance.api.tls import init_tls
from appliance.audit.keys import create_audit_keys
from appliance.auth import admin
from appliance.commands._local_admin import record_change
from appliance.config import SETTINGS_FILE, Settings, default_data_dir, load_settings
from appliance.db import migrate
from appliance.db.base import utcnow
from appliance.db.datadir import load_data_dir
from appliance.db.engine import UnitOfWork, make_engine
from appliance.db.models import User
from appliance.model.signing import init_model_trust
from shared.errors import ConfigError, ConflictError

__all__ = ["STEPS", "Step", "register"]

Step = Callable[[Settings], None]


def write_settings(settings: Settings) -> None:
    """enclave.toml with the choices made at init; every other setting keeps its default."""
    chosen: dict[str, object] = {"host": settings.host, "port": settings.port}
    if settings.database_url:
        chosen["database_url"] = settings.database_url
    header = (
        "# Enclave appliance settings (see appliance/config.py for every key and its default).\n"
        "# Each key can also be set as an environment variable ENCLAVE_<KEY>.\n"
    )
    settings.settings_file.write_text(header + tomli_w.dumps(chosen), encoding="utf-8")


def create_directories(settings: Settings) -> None:
    for path in (settings.keys_dir, settings.models_dir):
        path.mkdir(mode=0o700, exist_ok=True)


def migrate_database(settings: Settings) -> None:
    migrate.upgrade(settings.db_url)


def create_audit_key_files(settings: Settings) -> None:
    create_audit_keys(settings.keys_dir)


def create_default_team(settings: Settings) -> None:
    """The team new users join by default, with the default policy (every installed model)."""
    engine = make_engine(settings.db_url)
    try:
        with UnitOfWork(engine)() as session:
            if admin.DEFAULT_TEAM not in {t.name for t in admin.list_teams(session)}:
                change = admin.create_team(session, admin.DEFAULT_TEAM, now=utcnow())
                record_change(settings, engine, session, change)
    finally:
        engine.dispose()


# Run in order on the settings of the directory being built. Add a step with one line.
STEPS: list[Step] = [
    write_settings,
    create_directories,
    migrate_database,
    create_audit_key_files,
    create_default_team,
    init_tls,
    init_model_trust,
]


def create_first_admin(settings: Settings, username: str) -> str:
    """The first admin, with a generated one-time password (returned, to be printed once)."""
    engine = make_engine(settings.db_url)
    try:
        with UnitOfWork(engine)() as session:
            change, password = admin.create_user(session, username, role="admin", now=utcnow())
            record_change(settings, engine, session, change)
    finally:
        engine.dispose()
    assert password is not None  # create_user generates one when none is given
    return password


def _refuse_used_database(url: str) -> None:
    if migrate.current(url) is None:
        return
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            used = "users" in inspect(conn).get_table_names() and bool(
                conn.scalar(select(func.count()).select_from(User))
            )
    finally:
        engine.dispose()
    if used:
        raise ConflictError(f"database {migrate.redact_url(url)} already holds an Enclave installation")


def _init(target: Path, *, admin_name: str, database_url: str | None) -> tuple[Settings, str]:
    if target.exists():
        if not target.is_dir():
            raise ConflictError(f"{target} exists and is not a directory; choose another --data")
        if any(target.iterdir()):
            what = "an initialised data directory" if (target / SETTINGS_FILE).exists() else "not empty"
            raise ConflictError(f"{target} already exists and is {what}; choose another --data")
    admin.validate_username(admin_name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{target.name}.init-", dir=target.parent))
    except OSError as exc:
        raise ConfigError(f"cannot create {target}: {exc.strerror or exc}") from None
    try:
        settings = load_settings(building)
        if database_url is not None:
            settings = dataclasses.replace(settings, database_url=database_url)
        if settings.database_url:
            _refuse_used_database(settings.database_url)
        for step in STEPS:
            step(settings)
        password = create_first_admin(settings, admin_name)
        # Replaces an empty directory; a non-empty one appeared meanwhile is an error (ENOTEMPTY).
        os.rename(building, target)
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise ConfigError(f"cannot initialise {target}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return load_settings(target), password


def _upgrade(data: str | None) -> int:
    settings = load_data_dir(data)
    before = migrate.current(settings.db_url)
    migrate.upgrade(settings.db_url)
    print(f"database {migrate.redact_url(settings.db_url)}: {before or 'empty'} -> {migrate.head()}")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.upgrade:
        return _upgrade(args.data)
    target = (Path(args.data).expanduser() if args.data else default_data_dir()).absolute()
    settings, password = _init(target, admin_name=args.admin, database_url=args.database_url)
    print(f"Initialised Enclave data directory {settings.data_dir}")
    print(f"database: {migrate.redact_url(settings.db_url)} at {migrate.head()}")
    print(f"first admin: {args.admin.strip().lower()}")
    print(f"one-time password (shown only now; must be changed at first login): {password}")
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="DIR", help="data directory (default: $ENCLAVE_DATA or the platform's)"
    )
    parser.add_argument(
        "--admin", default="admin", metavar="NAME", help="first admin's username (default: admin)"
    )
    parser.add_argument(
        "--database-url", metavar="URL", help="external database (PostgreSQL) instead of SQLite in DIR"
    )
    parser.add_argument(
        "--upgrade", action="store_true", help="migrate an existing data directory's database"
    )
    parser.set_defaults(func=_run)
