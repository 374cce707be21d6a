"""The serving appliance's housekeeper applies sealed-content retention and clears dead auth rows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

import pytest

from appliance.api.housekeeping import Housekeeper
from appliance.audit import AuditEvent, AuditFilter, AuditKeys, AuditLog
from appliance.config import Settings
from appliance.db import migrate
from appliance.db.engine import UnitOfWork, make_engine
from shared.errors import NotFoundError

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(days=40)


def _sealed_ref(log: AuditLog) -> str:
    log.append(
        AuditEvent(
            action="generation.completed",
            actor="alice",
            target="project:7",
            content={"prompt": "old prompt", "completion": "ok"},
            capture="sealed",
        )
    )
    record = log.query(AuditFilter(action="generation.completed"), limit=1).records[0]
    assert record.content is not None
    return str(record.content["ref"])


@pytest.mark.parametrize("interval_s", [None, 0.05], ids=["tick", "thread"])
def test_retention_shreds_old_sealed_content_and_the_chain_verifies(
    sqlite_url: str, tmp_path: Path, interval_s: float | None
) -> None:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    keys = AuditKeys.generate()
    with AuditLog(engine, keys, clock=lambda: OLD) as old_log:
        ref = _sealed_ref(old_log)
    settings = dataclasses.replace(Settings(data_dir=tmp_path), audit_sealed_retention_days=30)
    with AuditLog(engine, keys, clock=lambda: NOW) as log:
        keeper = Housekeeper(
            settings=settings,
            uow=UnitOfWork(engine),
            audit_log=log,
            interval_s=interval_s or 3600,
            clock=lambda: NOW,
        )
        if interval_s is None:
            done = keeper.run_once()
            assert done["sealed"] == 1 and "login_sessions" in done
            assert keeper.run_once()["sealed"] == 0  # nothing left to shred, and no empty purge record
        else:
            keeper.start()
            deadline = time.monotonic() + 30
            while not log.query(AuditFilter(action="audit.content.purged")).records:
                assert time.monotonic() < deadline, "the housekeeping thread never purged"
                time.sleep(0.02)
            keeper.stop()
        with pytest.raises(NotFoundError, match="purged"):
            log.read_sealed(ref, actor="audra", role="auditor")
        assert len(log.query(AuditFilter(action="audit.content.purged")).records) == 1
        assert log.verify().ok
    engine.dispose()


def test_retention_off_touches_no_content(sqlite_url: str, tmp_path: Path) -> None:
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with AuditLog(engine, AuditKeys.generate(), clock=lambda: OLD) as log:
        ref = _sealed_ref(log)
        keeper = Housekeeper(
            settings=Settings(data_dir=tmp_path), uow=UnitOfWork(engine), audit_log=log, clock=lambda: NOW
        )
        assert "sealed" not in keeper.run_once()
        assert log.read_sealed(ref, actor="audra", role="auditor")["prompt"] == "old prompt"
    engine.dispose()
