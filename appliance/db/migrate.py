"""Schema migrations, run programmatically (no alembic.ini needed, so it works from a wheel).

``upgrade(url)`` brings a database to the code's head, ``downgrade(url, rev)`` takes it back,
``current(url)`` says where it is, ``head()`` where the code is. Before touching a database each
of them checks that it is ours and not newer than the code; ``check(url)`` additionally demands
that it is exactly at head (what every command but ``init`` needs). All failures are
:class:`DatabaseError` with a one-line reason.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from appliance.db.engine import make_engine
from shared.errors import DatabaseError

__all__ = ["check", "current", "downgrade", "head", "redact_url", "script_directory", "upgrade"]

VERSION_TABLE = "alembic_version"


def _migrations_dir() -> Path:
    # Resolved through the installed package, so it is right in a checkout and in a wheel alike.
    return Path(str(resources.files("migrations")))


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision this code knows (a single head is enforced)."""
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise DatabaseError(f"migrations have {len(heads)} heads, expected one: {sorted(heads)}")
    return heads[0]


def redact_url(url: str) -> str:
    """The URL as it may be shown to a person: password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def _revision_of(conn: Connection) -> str | None:
    """The database's revision; None for an empty database. Raises if it is not ours."""
    names = set(inspect(conn).get_table_names())
    if VERSION_TABLE not in names:
        if names:
            raise DatabaseError(
                f"database holds tables ({', '.join(sorted(names)[:3])}, ...) but no Enclave schema version: "
                "not an Enclave database"
            )
        return None
    revs = MigrationContext.configure(conn).get_current_heads()
    if len(revs) > 1:
        raise DatabaseError(f"database has several schema versions {sorted(revs)}: not an Enclave database")
    return revs[0] if revs else None


def _check_known(rev: str | None) -> None:
    if rev is None:
        return
    script = script_directory()
    try:
        known = script.get_revision(rev) is not None
    except CommandError:
        known = False
    if not known:
        raise DatabaseError(
            f"database schema is at revision {rev!r}, which this Enclave does not know "
            f"(its newest is {head()!r}): the database is newer than the code, or not ours"
        )


def _engine(url: str) -> Engine:
    return make_engine(url)


def _connect_error(url: str, exc: SQLAlchemyError) -> DatabaseError:
    orig = getattr(exc, "orig", None) or exc
    reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return DatabaseError(f"cannot reach database {redact_url(url)}: {reason}")


def current(url: str) -> str | None:
    """The database's revision (None when empty). Refuses a database that is newer or not ours."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            rev = _revision_of(conn)
    except OperationalError as exc:
        raise _connect_error(url, exc) from None
    finally:
        engine.dispose()
    _check_known(rev)
    return rev


def check(url: str) -> None:
    """Raise DatabaseError unless the database is exactly at the code's head."""
    rev = current(url)
    want = head()
    if rev is None:
        raise DatabaseError(f"database {redact_url(url)} is empty: run `enclave init`")
    if rev != want:
        raise DatabaseError(
            f"database schema is at {rev!r}, this Enclave expects {want!r}: run `enclave init --upgrade`"
        )


def _run(url: str, action: str, target: str) -> None:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            _check_known(_revision_of(conn))
            if conn.in_transaction():
                conn.commit()
            cfg = _config(conn)
            if action == "upgrade":
                command.upgrade(cfg, target)
            else:
                command.downgrade(cfg, target)
    except OperationalError as exc:
        raise _connect_error(url, exc) from None
    except CommandError as exc:
        raise DatabaseError(f"cannot {action} database to {target!r}: {exc}") from None
    finally:
        engine.dispose()


def upgrade(url: str, target: str = "head") -> None:
    """Migrate the database up to ``target`` (default: head). Creates the schema in an empty one."""
    _run(url, "upgrade", target)


def downgrade(url: str, target: str) -> None:
    """Migrate the database down to ``target`` ("base" removes every table)."""
    _run(url, "downgrade", target)
