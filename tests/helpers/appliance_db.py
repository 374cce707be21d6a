"""A migrated appliance database for a test, and a fixed clock to pass as ``now``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from appliance.db import migrate
from appliance.db.engine import UnitOfWork, make_engine

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    """``T0`` plus ``seconds``: tests inject time, they never sleep."""
    return T0 + dt.timedelta(seconds=seconds)


@contextmanager
def migrated_uow(url: str) -> Iterator[UnitOfWork]:
    """The database at ``url`` upgraded to head, and a unit of work on it."""
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        yield UnitOfWork(engine)
    finally:
        engine.dispose()


# The login throttle's digest key for tests that call the auth functions directly (the service
# derives its own from the audit HMAC key).
THROTTLE_KEY = b"enclave-tests-login-throttle-key"


def all_rows_text(url: str) -> str:
    """Every row of every table at ``url``, as text: what a reader of the database would see."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            parts: list[str] = []
            for table in sa.inspect(conn).get_table_names():
                parts.extend(repr(tuple(row)) for row in conn.execute(sa.text(f'select * from "{table}"')))
            return "\n".join(parts)
    finally:
        engine.dispose()
