"""Appending, transactions, checkpoints and queries on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from appliance.audit import AuditEvent, AuditFilter, AuditKeys, AuditLog
from shared.errors import InputError


def _event(n: int, **kw: object) -> AuditEvent:
    return AuditEvent(action="auth.login.ok", actor=f"user{n}", request_id=f"r{n}", **kw)  # type: ignore[arg-type]


def test_appends_get_consecutive_seqs_and_verify(log: AuditLog) -> None:
    seqs = [log.append(_event(n)) for n in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    report = log.verify()
    assert report.ok and report.total == 5
    assert report.summary().startswith("5/5 events valid")
    records = log.query(limit=10).records
    assert [r.seq for r in records] == [5, 4, 3, 2, 1]
    assert records[-1].prev_hash == "0" * 64 and records[-2].prev_hash == records[-1].hash


def test_append_in_commits_and_rolls_back_with_the_callers_transaction(log: AuditLog, engine: Engine) -> None:
    log.append(_event(0))
    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        log.append_in(
            session, AuditEvent(action="admin.user.role_changed", actor="admin", details={"old": 1})
        )
        raise RuntimeError("the admin change failed")
    with Session(engine) as session, session.begin():
        seq = log.append_in(
            session,
            AuditEvent(
                action="admin.user.role_changed",
                actor="admin",
                target="user:bob",
                details={"old": {"role": "developer"}, "new": {"role": "admin"}},
            ),
        )
    assert seq == 2  # the rolled-back event left no gap
    assert log.append(_event(3)) == 3
    assert log.verify().ok
    [changed] = log.query(AuditFilter(action="admin.")).records
    assert changed.details == {"old": {"role": "developer"}, "new": {"role": "admin"}}


def test_checkpoints_are_made_every_n_events_and_signed(engine: Engine, keys: AuditKeys) -> None:
    with AuditLog(engine, keys, checkpoint_every=5) as audit:
        for n in range(12):
            audit.append(_event(n))
        with engine.connect() as conn:
            seqs = [r[0] for r in conn.execute(text("SELECT seq FROM audit_checkpoints ORDER BY seq"))]
        assert seqs == [5, 10]
        report = audit.verify()
        assert report.ok and report.last_checkpoint is not None and report.last_checkpoint.seq == 10
        assert report.last_checkpoint.signature_valid(keys)
        assert not report.last_checkpoint.signature_valid(AuditKeys.generate())


def test_checkpoints_are_made_after_an_interval_without_appends(engine: Engine, keys: AuditKeys) -> None:
    with AuditLog(engine, keys, checkpoint_every=1000, checkpoint_interval_s=0.05) as audit:
        audit.append(_event(1))
        deadline = time.monotonic() + 20
        found = None
        while found is None and time.monotonic() < deadline:
            with engine.connect() as conn:
                found = conn.execute(text("SELECT seq FROM audit_checkpoints")).scalar()
            time.sleep(0.02)
        assert found == 1


def test_on_demand_checkpoint_covers_the_head_and_is_reused(log: AuditLog, keys: AuditKeys) -> None:
    empty = log.checkpoint()
    assert empty.seq == 0 and empty.signature_valid(keys)
    log.append(_event(1))
    log.append(_event(2))
    cp = log.checkpoint()
    assert cp.seq == 2 and cp.head_hash == log.query(limit=1).records[0].hash
    assert log.checkpoint() == cp


def test_bad_events_are_refused_before_they_can_join_a_batch(sqlite_log: AuditLog) -> None:
    sqlite_log.append(_event(1))
    with pytest.raises(InputError, match="floats"):
        sqlite_log.append(AuditEvent(action="generation.completed", actor="a", details={"latency": 0.5}))
    with pytest.raises(InputError, match="longer than"):
        sqlite_log.append(AuditEvent(action="x", actor="a" * 1000))
    with pytest.raises(InputError, match="capture mode"):
        sqlite_log.append(AuditEvent(action="x", actor="a", content={"prompt": "p"}, capture="all"))  # type: ignore[arg-type]
    assert sqlite_log.append(_event(2)) == 2


def test_secrets_in_details_are_redacted_before_storage(log: AuditLog, engine: Engine) -> None:
    secret = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    log.append(AuditEvent(action="admin.key.changed", actor="admin", details={"new": f"token {secret}"}))
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT details FROM audit_events")).scalar_one()
    assert secret not in stored and "[REDACTED:github-token]" in stored


def test_query_filters_and_pages(log: AuditLog) -> None:
    for n in range(7):
        log.append(
            AuditEvent(action="generation.requested", actor="alice" if n % 2 else "bob", outcome="success")
        )
    log.append(AuditEvent(action="auth.login.failed", actor="mallory", outcome="failure"))
    page = log.query(AuditFilter(actor="alice"), limit=2)
    assert [r.seq for r in page.records] == [6, 4]
    rest = log.query(AuditFilter(actor="alice"), limit=2, cursor=page.next_cursor)
    assert [r.seq for r in rest.records] == [2] and rest.next_cursor is None
    assert [r.actor for r in log.query(AuditFilter(outcome="failure")).records] == ["mallory"]
    assert len(log.query(AuditFilter(action="generation.*")).records) == 7
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert log.query(AuditFilter(since=future)).records == []
    with pytest.raises(InputError):
        log.query(limit=0)


def test_append_async_waits_for_the_commit(sqlite_log: AuditLog) -> None:
    import asyncio

    async def main() -> list[int]:
        return list(await asyncio.gather(*(sqlite_log.append_async(_event(n)) for n in range(6))))

    assert sorted(asyncio.run(main())) == [1, 2, 3, 4, 5, 6]
    assert sqlite_log.verify().total == 6


def test_append_only_guards_refuse_updates_and_deletes(log: AuditLog, engine: Engine) -> None:
    log.append(_event(1))
    for statement in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    assert log.verify().ok


def test_a_caller_that_gives_up_is_still_recorded_and_breaks_nothing(
    sqlite_engine: Engine, keys: AuditKeys
) -> None:
    with AuditLog(sqlite_engine, keys) as audit:
        blocker = sqlite_engine.connect()
        blocker.exec_driver_sql("SELECT 1")  # make_engine begins with BEGIN IMMEDIATE: the write lock
        first = audit.submit(_event(1))  # the writer takes it and waits for the lock
        deadline = time.monotonic() + 20
        while not first.running() and time.monotonic() < deadline:
            time.sleep(0.005)
        abandoned = audit.submit(_event(2))  # still queued behind the blocked commit
        kept = audit.submit(_event(3))
        assert abandoned.cancel()
        blocker.rollback()
        blocker.close()
        assert first.result(timeout=30) == 1
        assert kept.result(timeout=30) == 3
        assert audit.append(_event(4)) == 4
        report = audit.verify()
        assert report.ok and report.total == 4
