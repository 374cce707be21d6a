"""Capture modes: none, digest (HMAC an auditor can test) and sealed (auditor-only, every read
audited, crypto-shredded on purge while the chain still verifies)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from appliance.audit import AuditEvent, AuditFilter, AuditKeys, AuditLog
from appliance.db.engine import make_engine
from shared.errors import AuditUnavailableError, IntegrityError, NotFoundError, PermissionDeniedError

SECRET = "AKIA" + "Q3EGJ7RZ5NW2XK4P"
PROMPT = f"write a deploy script; creds: {SECRET}"
COMPLETION = "def deploy():\n    ..."


def _completed(capture: str) -> AuditEvent:
    return AuditEvent(
        action="generation.completed",
        actor="alice",
        target="project:7",
        details={"finish_reason": "stop", "completion_tokens": 9},
        content={"prompt": PROMPT, "completion": COMPLETION},
        capture=capture,  # type: ignore[arg-type]
    )


def _stored(engine: Engine) -> str:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT details, content FROM audit_events")).all()
        blobs = conn.execute(text("SELECT ciphertext FROM audit_sealed")).scalars().all()
    return repr(rows) + repr(blobs)


def test_capture_none_keeps_no_content(log: AuditLog, engine: Engine) -> None:
    seq = log.append(_completed("none"))
    assert log.query().records[0].content is None
    assert "deploy" not in _stored(engine)
    assert seq == 1


def test_digest_lets_an_auditor_test_a_candidate_text(log: AuditLog, engine: Engine) -> None:
    seq = log.append(_completed("digest"))
    assert "deploy" not in _stored(engine) and SECRET not in _stored(engine)
    assert log.test_digest(seq, "completion", COMPLETION, actor="audra", role="auditor")
    assert not log.test_digest(seq, "completion", COMPLETION + " ", actor="audra", role="auditor")
    # The prompt was redacted before it was digested, so the candidate is redacted the same way.
    assert log.test_digest(seq, "prompt", PROMPT, actor="audra", role="auditor")
    with pytest.raises(PermissionDeniedError):
        log.test_digest(seq, "prompt", PROMPT, actor="dev", role="developer")
    actions = [(r.action, r.actor, r.outcome) for r in log.query(AuditFilter(action="audit.")).records]
    assert actions == [
        ("audit.content.tested", "dev", "denied"),
        ("audit.content.tested", "audra", "success"),
        ("audit.content.tested", "audra", "success"),
        ("audit.content.tested", "audra", "success"),
    ]


def test_sealed_content_is_auditor_only_and_every_read_is_recorded(log: AuditLog, engine: Engine) -> None:
    log.append(_completed("sealed"))
    assert "deploy" not in _stored(engine) and SECRET not in _stored(engine)
    ref = log.query().records[0].content["ref"]  # type: ignore[index]
    with pytest.raises(PermissionDeniedError):
        log.read_sealed(ref, actor="dev", role="developer")
    content = log.read_sealed(ref, actor="audra", role="auditor", request_id="req-9")
    assert content == {
        "prompt": PROMPT.replace(SECRET, "[REDACTED:aws-access-key]"),
        "completion": COMPLETION,
    }
    reads = log.query(AuditFilter(action="audit.content.read")).records
    assert [(r.actor, r.outcome, r.target) for r in reads] == [
        ("audra", "success", ref),
        ("dev", "denied", ref),
    ]
    assert reads[0].request_id == "req-9"
    assert log.verify().ok


def test_purge_crypto_shreds_sealed_content_and_the_chain_still_verifies(
    log: AuditLog, engine: Engine
) -> None:
    log.append(_completed("sealed"))
    ref = log.query().records[0].content["ref"]  # type: ignore[index]
    assert log.purge_sealed(dt.datetime.now(dt.UTC) - dt.timedelta(days=1)) == 0  # too recent to purge
    assert log.purge_sealed(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1), actor="retention") == 1
    with pytest.raises(NotFoundError, match="purged"):
        log.read_sealed(ref, actor="audra", role="auditor")
    with engine.connect() as conn:
        wrapped, ciphertext = conn.execute(text("SELECT wrapped_key, ciphertext FROM audit_sealed")).one()
    assert wrapped is None and ciphertext  # the key is gone, the hashed ciphertext stays
    purges = log.query(AuditFilter(action="audit.content.purged")).records
    assert [p.details["count"] for p in purges] == [1, 0]  # newest first
    failed = log.query(AuditFilter(action="audit.content.read")).records[0]
    assert failed.outcome == "failure" and "purged" in failed.details["reason"]
    assert log.verify().ok


def test_altered_ciphertext_does_not_decrypt(log: AuditLog, engine: Engine) -> None:
    log.append(_completed("sealed"))
    ref = log.query().records[0].content["ref"]  # type: ignore[index]
    with engine.begin() as conn:
        blob = conn.execute(text("SELECT ciphertext FROM audit_sealed")).scalar_one()
        conn.execute(
            text("UPDATE audit_sealed SET ciphertext = :c"), {"c": blob[:-1] + bytes([blob[-1] ^ 1])}
        )
    with pytest.raises(IntegrityError):
        log.read_sealed(ref, actor="audra", role="auditor")


def test_sealed_content_is_not_returned_when_the_read_cannot_be_recorded(
    sqlite_engine: Engine, keys: AuditKeys
) -> None:
    with AuditLog(sqlite_engine, keys) as audit:
        audit.append(_completed("sealed"))
        ref = audit.query().records[0].content["ref"]  # type: ignore[index]
    path = Path(str(sqlite_engine.url.database))
    read_only = make_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with AuditLog(read_only, keys) as audit, pytest.raises(AuditUnavailableError):
        audit.read_sealed(ref, actor="audra", role="auditor")
    read_only.dispose()


def test_another_master_key_cannot_open_sealed_content(log: AuditLog, engine: Engine) -> None:
    log.append(_completed("sealed"))
    ref = log.query().records[0].content["ref"]  # type: ignore[index]
    with AuditLog(engine, AuditKeys.generate()) as other, pytest.raises(IntegrityError):
        other.read_sealed(ref, actor="audra", role="auditor")
