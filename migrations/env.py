"""Alembic environment: targets the complete ``Base.metadata`` (via appliance.db.schema).

appliance.db.migrate passes its connection in ``config.attributes["connection"]``; the ``alembic``
command (see alembic.ini) takes the URL from ``ENCLAVE_DATABASE_URL`` or ``sqlalchemy.url``. SQLite runs
in batch mode, because its ALTER TABLE cannot change constraints in place.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from appliance.db.engine import make_engine
from appliance.db.schema import metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or os.environ.get("ENCLAVE_DATABASE_URL", ""),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("ENCLAVE_DATABASE_URL", "")
    if not url:
        raise RuntimeError("no database URL: set ENCLAVE_DATABASE_URL (or sqlalchemy.url)")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            run_on(conn)
    finally:
        engine.dispose()


def run_on(conn: Connection) -> None:
    """Migrate over ``conn``; on SQLite with foreign keys off, checked once at the end.

    Batch mode rebuilds a table by copy, drop and rename; with enforcement on, the drop would
    trip (or cascade through) the foreign keys that point at it.
    """
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        # Outside any transaction: SQLite ignores this pragma inside one.
        conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
    try:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if bad:
                    raise RuntimeError(f"migration left dangling foreign keys: {bad[:3]}")
    finally:
        if sqlite:
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
