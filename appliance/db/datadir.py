"""Open an initialised data directory and its database, refusing anything else with one line.

Every command but ``init`` starts here::

    settings = load_data_dir(args.data)             # ConfigError unless `enclave init` made it
    with open_database(settings) as (engine, uow):  # DatabaseError unless reachable and at head
        with uow() as session:
            ...
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from appliance.config import SETTINGS_FILE, Settings, default_data_dir, load_settings
from appliance.db import migrate
from appliance.db.engine import UnitOfWork, make_engine
from shared.errors import ConfigError

__all__ = ["load_data_dir", "open_database"]


def load_data_dir(data_dir: Path | str | None) -> Settings:
    """Settings of an initialised data directory (``None``: the default one)."""
    base = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if not base.is_dir() or not (base / SETTINGS_FILE).is_file():
        raise ConfigError(
            f"{base} is not an Enclave data directory (no {SETTINGS_FILE}): run `enclave init --data {base}`"
        )
    return load_settings(base)


@contextmanager
def open_database(settings: Settings) -> Iterator[tuple[Engine, UnitOfWork]]:
    """An engine and unit of work on the settings' database, after checking it is at head."""
    migrate.check(settings.db_url)
    engine = make_engine(settings.db_url)
    try:
        yield engine, UnitOfWork(engine)
    finally:
        engine.dispose()
