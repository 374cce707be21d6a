"""An appliance for API tests: a migrated database (SQLite by default, or ``db_url`` for both backends),
real audit keys and AuditLog, real users and tokens, the fake engine, and a clock tests can move."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from appliance.api.app import close_app, create_app
from appliance.audit.keys import create_audit_keys
from appliance.audit.log import AuditLog
from appliance.auth import admin as ops
from appliance.auth import tokens as token_ops
from appliance.config import Settings
from appliance.db import migrate
from appliance.db.base import Base
from appliance.db.engine import UnitOfWork, make_engine
from tests.helpers.fake_engine import FakeEngine

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
PASSWORD = "quartz-lantern-meadow-7319"


@dataclass
class MovableClock:
    offset: float = 0.0

    def now(self) -> dt.datetime:
        return T0 + dt.timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return 1000.0 + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Appliance:
    settings: Settings
    uow: UnitOfWork
    audit: AuditLog
    engine: FakeEngine
    clock: MovableClock
    app: FastAPI
    tokens: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        close_app(self.app)
        self.audit.close()
        self.uow.engine.dispose()

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def actions(self) -> list[str]:
        return [r.action for r in reversed(self.audit.query(limit=1000).records)]

    def records(self, action: str) -> list[dict[str, object]]:
        from appliance.audit.query import AuditFilter

        return [
            r.as_dict() for r in reversed(self.audit.query(AuditFilter(action=action), limit=1000).records)
        ]


def build_appliance(
    data_dir: Path,
    url: str,
    *,
    engine: FakeEngine | None = None,
    policy: dict[str, object] | None = None,
    **settings: object,
) -> Appliance:
    migrate.upgrade(url)
    db = make_engine(url)
    # Audit tables come from their own migration once it lands; create any still missing.
    Base.metadata.create_all(db)
    uow = UnitOfWork(db)
    keys = create_audit_keys(data_dir / "keys")
    audit = AuditLog(db, keys)
    clock = MovableClock()
    tokens: dict[str, str] = {}
    with uow() as session:
        ops.create_team(session, ops.DEFAULT_TEAM, now=T0, policy=policy)
        for name, role in (("dev", "developer"), ("aud", "auditor"), ("adm", "admin")):
            ops.create_user(session, name, role=role, now=T0, password=PASSWORD)
            user = ops.get_user(session, name)
            raw, _, _ = token_ops.create_token(
                session, user.id, name="test", expires_in=dt.timedelta(days=30), now=T0
            )
            tokens[name] = raw
    fake = engine or FakeEngine()
    cfg = Settings(data_dir=data_dir, database_url=url, **settings)  # type: ignore[arg-type]
    app = create_app(settings=cfg, uow=uow, audit_log=audit, engine=fake, clock=clock)
    return Appliance(cfg, uow, audit, fake, clock, app, tokens)


@pytest.fixture
def appliance(tmp_path: Path, sqlite_url: str) -> Iterator[Appliance]:
    a = build_appliance(tmp_path, sqlite_url)
    try:
        yield a
    finally:
        a.close()


@pytest.fixture
def client(appliance: Appliance) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=appliance.app, client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")
