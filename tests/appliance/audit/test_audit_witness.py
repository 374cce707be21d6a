"""The latest signed checkpoint is also kept outside the database (issue 12 item 7): with write
access to the database only, deleting records with their checkpoints, or wiping every audit table,
no longer verifies clean."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from appliance.audit import AuditEvent, AuditKeys, AuditLog
from appliance.audit.checkpoints import WITNESS_FILE, read_checkpoint_file
from tests.helpers.audit_tamper import tampering


@pytest.fixture
def witnessed(engine: Engine, keys: AuditKeys, tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(engine, keys, checkpoint_every=5, witness=tmp_path / WITNESS_FILE) as audit:
        yield audit


def _fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append(AuditEvent(action="generation.requested", actor=f"user{i}", target="model:m"))


def test_each_checkpoint_is_also_written_to_the_witness_file(witnessed: AuditLog, tmp_path: Path) -> None:
    _fill(witnessed, 12)  # checkpoints at 5 and 10 as the writer goes
    assert read_checkpoint_file(tmp_path / WITNESS_FILE).seq == 10
    cp = witnessed.checkpoint()
    assert read_checkpoint_file(tmp_path / WITNESS_FILE) == cp and cp.seq == 12
    assert witnessed.verify().ok


def test_deleting_the_tail_with_its_checkpoints_is_caught(witnessed: AuditLog) -> None:
    _fill(witnessed, 12)
    witnessed.checkpoint()
    with tampering(witnessed.engine) as conn:
        conn.exec_driver_sql("DELETE FROM audit_checkpoints WHERE seq > 5")
        conn.exec_driver_sql("DELETE FROM audit_events WHERE seq > 5")
        conn.exec_driver_sql(
            "UPDATE audit_chain_head SET seq = 5, hash = (SELECT hash FROM audit_events WHERE seq = 5)"
        )
    report = witnessed.verify()
    assert report.problem is not None and report.problem.kind == "truncated"
    assert "signed checkpoint covers seq 12" in str(report.problem)


def test_wiping_every_audit_table_is_caught(witnessed: AuditLog) -> None:
    _fill(witnessed, 7)
    witnessed.checkpoint()
    with tampering(witnessed.engine) as conn:
        for table in ("audit_checkpoints", "audit_sealed", "audit_events", "audit_chain_head"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    report = witnessed.verify()
    assert report.problem is not None and report.problem.kind == "truncated"
    assert "the log ends at seq 0 but a signed checkpoint covers seq 7" in str(report.problem)


def test_the_witness_never_moves_back(witnessed: AuditLog, tmp_path: Path) -> None:
    _fill(witnessed, 3)
    later = witnessed.checkpoint()
    from appliance.audit.checkpoints import sign_checkpoint, witness_checkpoint

    older = sign_checkpoint(witnessed.keys, 1, "0" * 64, later.time)
    assert witness_checkpoint(older, tmp_path / WITNESS_FILE) is False
    assert read_checkpoint_file(tmp_path / WITNESS_FILE) == later
