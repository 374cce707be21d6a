"""Retention of sealed content: `enclave audit purge` and the automatic policy crypto-shred old
content, the purge is itself on the chain, and the chain still verifies."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine

from appliance.audit import (
    AuditEvent,
    AuditFilter,
    AuditKeys,
    AuditLog,
    AuditRecord,
    apply_sealed_retention,
    load_audit_keys,
    parse_cutoff,
)
from appliance.audit.retention import RETENTION_ACTOR
from appliance.cli import main
from appliance.config import Settings, load_settings
from appliance.db.engine import make_engine
from shared.errors import ConfigError, InputError, NotFoundError
from tests.helpers.appliance_cli import one_line_error, run_cli

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def _sealed(prompt: str) -> AuditEvent:
    return AuditEvent(
        action="generation.completed",
        actor="alice",
        target="project:7",
        content={"prompt": prompt, "completion": "ok"},
        capture="sealed",
    )


def _append_at(engine: Engine, keys: AuditKeys, moment: dt.datetime, prompt: str) -> str:
    """Append a sealed event as if at ``moment``; returns its sealed ref."""
    with AuditLog(engine, keys, clock=lambda: moment) as log:
        seq = log.append(_sealed(prompt))
        record = log.query(AuditFilter(action="generation.completed"), limit=1).records[0]
    assert record.seq == seq and record.content is not None
    return str(record.content["ref"])


def _purges(log: AuditLog) -> list[AuditRecord]:
    return log.query(AuditFilter(action="audit.content.purged")).records


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", NOW - dt.timedelta(days=90)),
        ("12h", NOW - dt.timedelta(hours=12)),
        ("2w", NOW - dt.timedelta(weeks=2)),
        ("30m", NOW - dt.timedelta(minutes=30)),
        ("2026-01-31", dt.datetime(2026, 1, 31, tzinfo=dt.UTC)),
        ("2026-01-31T09:00:00Z", dt.datetime(2026, 1, 31, 9, tzinfo=dt.UTC)),
        ("2026-01-31T09:00:00+02:00", dt.datetime(2026, 1, 31, 7, tzinfo=dt.UTC)),
    ],
)
def test_cutoff_is_an_iso_time_or_an_age(text: str, expected: dt.datetime) -> None:
    assert parse_cutoff(text, now=NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"), [("soon", "neither"), ("90x", "neither"), ("2027-01-01", "future")]
)
def test_cutoff_refuses_garbage_and_the_future(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_cutoff(text, now=NOW)


def test_retention_shreds_only_old_content_and_records_it_once(engine: Engine, keys: AuditKeys) -> None:
    old = _append_at(engine, keys, NOW - dt.timedelta(days=40), "old prompt")
    new = _append_at(engine, keys, NOW - dt.timedelta(days=5), "new prompt")
    settings = dataclasses.replace(Settings(data_dir=Path(".")), audit_sealed_retention_days=30)
    with AuditLog(engine, keys, clock=lambda: NOW) as log:
        assert (
            apply_sealed_retention(log, dataclasses.replace(settings, audit_sealed_retention_days=0)) is None
        )
        assert apply_sealed_retention(log, settings, now=NOW) == 1
        # Nothing more is due: a periodic run adds no empty purge records.
        assert apply_sealed_retention(log, settings, now=NOW) == 0
        with pytest.raises(NotFoundError, match=r"purged at 2026-11-28T12:00:00\.000000Z"):
            log.read_sealed(old, actor="audra", role="auditor")
        assert log.read_sealed(new, actor="audra", role="auditor")["prompt"] == "new prompt"
        [purge] = _purges(log)
        assert purge.actor == RETENTION_ACTOR
        assert purge.details["count"] == 1
        assert purge.details["before"] == "2026-10-29T12:00:00.000000Z"
        assert purge.details["oldest"] == purge.details["newest"] == "2026-10-19T12:00:00.000000Z"
        assert "30 days" in purge.details["reason"]
        report = log.verify()
        assert report.ok, report.problem
        assert report.total == 5  # two captures, the purge, the failed and the good read


def test_retention_setting_is_loaded_and_checked(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={}).audit_sealed_retention_days == 0
    loaded = load_settings(tmp_path, environ={"ENCLAVE_AUDIT_SEALED_RETENTION_DAYS": "90"})
    assert loaded.audit_sealed_retention_days == 90
    with pytest.raises(ConfigError, match="audit_sealed_retention_days must be >= 0"):
        load_settings(tmp_path, environ={"ENCLAVE_AUDIT_SEALED_RETENTION_DAYS": "-1"})


# -- the command, end to end -------------------------------------------------------------------


def test_cli_purge_shreds_old_content_and_the_chain_still_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert main(["init", "--data", str(data)]) == 0
    settings = load_settings(data)
    engine = make_engine(settings.db_url)
    keys = load_audit_keys(settings)
    now = dt.datetime.now(dt.UTC)
    old = _append_at(engine, keys, now - dt.timedelta(days=100), "old prompt")
    new = _append_at(engine, keys, now - dt.timedelta(days=1), "new prompt")

    result = run_cli(capsys, ["audit", "purge", "--before", "90d", "--data", str(data)])
    assert result.code == 0, result.err
    assert "purged sealed content of 1 records captured before" in result.out

    with AuditLog.from_settings(settings, engine) as log:
        with pytest.raises(NotFoundError, match="was purged at"):
            log.read_sealed(old, actor="audra", role="auditor")
        assert log.read_sealed(new, actor="audra", role="auditor")["prompt"] == "new prompt"
        [purge] = _purges(log)
        assert purge.actor.startswith("cli:") and purge.outcome == "success"
        assert purge.details["count"] == 1
        assert purge.details["oldest"] == purge.details["newest"] < purge.details["before"]
        failed = log.query(AuditFilter(action="audit.content.read", outcome="failure")).records
        assert [r.target for r in failed] == [old]
        total = log.verify().total  # init's own records, two captures, the purge, two reads
    engine.dispose()
    verified = run_cli(capsys, ["audit", "verify", "--data", str(data)])
    assert verified.code == 0, verified.err
    assert f"{total}/{total} events valid" in verified.out and total >= 5


@pytest.mark.parametrize(
    ("before", "message"), [("last week", "neither an ISO 8601 time"), ("2999-01-01", "in the future")]
)
def test_cli_purge_bad_cutoff_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], before: str, message: str
) -> None:
    data = tmp_path / "data"
    assert main(["init", "--data", str(data)]) == 0
    line = one_line_error(run_cli(capsys, ["audit", "purge", "--before", before, "--data", str(data)]))
    assert message in line
