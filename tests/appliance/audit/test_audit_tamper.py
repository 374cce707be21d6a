"""Tampering with the stored log in every listed way is caught, and verify names the place.

The property test builds a random log in a real (migrated) SQLite database, optionally signs a
checkpoint of its head, applies one random mutation with plain SQL as an attacker with database
access would (after dropping the append-only triggers), and checks that ``verify`` reports the
expected first bad seq and kind. The same mutations run on PostgreSQL in a fixed example each.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, text

from appliance.audit import AuditEvent, AuditKeys, AuditLog
from appliance.audit.chain import GENESIS_HASH, row_hash
from appliance.audit.store import EVENT_COLUMNS
from appliance.db import migrate
from appliance.db.engine import make_engine
from shared.errors import AuditUnavailableError
from tests.helpers.audit_tamper import SWAP_COLUMNS, rehash, tampering

Expect = tuple[int, str]


def _row(conn: Connection, seq: int) -> Any:
    return conn.execute(text(f"SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq = :s"), {"s": seq}).one()


def _shift(conn: Connection, first: int, delta: int) -> None:
    # Two steps through negative seqs, so no intermediate state collides on the primary key.
    conn.execute(text("UPDATE audit_events SET seq = -(seq + :d) WHERE seq >= :f"), {"d": delta, "f": first})
    conn.execute(text("UPDATE audit_events SET seq = -seq WHERE seq < 0"))


def _insert(conn: Connection, values: dict[str, Any]) -> None:
    cols = ", ".join(values)
    conn.execute(
        text(f"INSERT INTO audit_events ({cols}) VALUES ({', '.join(':' + c for c in values)})"), values
    )


def _forged(conn: Connection, seq: int, *, smart: bool) -> dict[str, Any]:
    prev = GENESIS_HASH if seq == 1 else _row(conn, seq - 1).hash
    values = {
        "seq": seq,
        "time": "2026-01-01T00:00:00.000000Z",
        "actor": "mallory",
        "action": "admin.user.role_changed",
        "target": "user:mallory",
        "outcome": "success",
        "request_id": "",
        "client_address": "",
        "details": '{"new":"admin"}',
        "content": None,
        "prev_hash": prev if smart else "f" * 64,
    }
    fields = [values[c] for c in SWAP_COLUMNS[:-2]]
    values["hash"] = row_hash((seq, *fields, values["prev_hash"], None)) if smart else "e" * 64
    return values


def _set_head(conn: Connection) -> None:
    last = conn.execute(text("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")).first()
    seq, digest = (last.seq, last.hash) if last else (0, GENESIS_HASH)
    conn.execute(text("UPDATE audit_chain_head SET seq = :s, hash = :h"), {"s": seq, "h": digest})


# Each mutation: (conn, n, rng, has_checkpoint) -> expected (seq, kind), or None if inapplicable.
def modify(conn: Connection, n: int, rng: random.Random, cp: bool) -> Expect:
    i = rng.randint(1, n)
    column = rng.choice(SWAP_COLUMNS)
    old = getattr(_row(conn, i), column)
    if column == "details":
        new: Any = '{"forged":true}'
    elif column == "content":
        new = '{"mode":"digest"}' if old is None else None
    elif column == "time":
        new = old[:-2] + ("1Z" if old[-2] != "1" else "2Z")
    elif column in ("prev_hash", "hash"):
        new = old[:-1] + ("0" if old[-1] != "0" else "1")
    else:
        new = old + "x"
    conn.execute(text(f"UPDATE audit_events SET {column} = :v WHERE seq = :s"), {"v": new, "s": i})
    return i, "modified"


def modify_and_rehash(conn: Connection, n: int, rng: random.Random, cp: bool) -> Expect:
    i = rng.randint(1, n)
    conn.execute(text("UPDATE audit_events SET outcome = 'failure-hidden' WHERE seq = :s"), {"s": i})
    rehash(conn, i)
    return i, "modified"


def delete(conn: Connection, n: int, rng: random.Random, cp: bool) -> Expect:
    i = rng.randint(1, n)
    conn.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": i})
    return (i, "missing") if i < n else (n, "truncated")


def delete_and_renumber(conn: Connection, n: int, rng: random.Random, cp: bool) -> Expect:
    i = rng.randint(1, n)
    conn.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": i})
    _shift(conn, i + 1, -1)
    return (i, "missing") if i < n else (n, "truncated")


def insert(conn: Connection, n: int, rng: random.Random, cp: bool) -> Expect:
    i = rng.randint(1, n + 1)
    forged = _forged(conn, i, smart=rng.random() < 0.5)
    _shift(conn, i, +1)
    _insert(conn, forged)
    return i, "inserted"


def reorder(conn: Connection, n: int, rng: random.Random, cp: bool) -> Expect | None:
    if n < 2:
        return None
    i, j = sorted(rng.sample(range(1, n + 1), 2))
    a, b = _row(conn, i), _row(conn, j)
    assign = ", ".join(f"{c} = :{c}" for c in SWAP_COLUMNS)
    for seq, source in ((i, b), (j, a)):
        conn.execute(
            text(f"UPDATE audit_events SET {assign} WHERE seq = :seq"),
            {"seq": seq, **{c: getattr(source, c) for c in SWAP_COLUMNS}},
        )
    return i, "reordered"


def truncate(conn: Connection, n: int, rng: random.Random, cp: bool) -> Expect:
    k = rng.randint(0, n - 1)
    conn.execute(text("DELETE FROM audit_events WHERE seq > :k"), {"k": k})
    if cp and rng.random() < 0.5:
        _set_head(conn)  # a careful attacker moves the head too; the checkpoint still says n
    return k + 1, "truncated"


def rewrite_tail(conn: Connection, n: int, rng: random.Random, cp: bool) -> Expect | None:
    """Edit a record and re-chain everything after it, head included: only a checkpoint tells."""
    if not cp:
        return None
    i = rng.randint(1, n)
    conn.execute(text("UPDATE audit_events SET actor = 'someone-else' WHERE seq = :s"), {"s": i})
    digest = rehash(conn, i)
    for seq in range(i + 1, n + 1):
        digest = rehash(conn, seq, prev_hash=digest)
    _set_head(conn)
    return n, "modified"


def forge_signature(conn: Connection, n: int, rng: random.Random, cp: bool) -> Expect | None:
    if not cp:
        return None
    sig = conn.execute(text("SELECT signature FROM audit_checkpoints WHERE seq = :s"), {"s": n}).scalar_one()
    forged = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
    conn.execute(text("UPDATE audit_checkpoints SET signature = :g WHERE seq = :s"), {"g": forged, "s": n})
    return n, "bad-signature"


MUTATIONS: list[Callable[[Connection, int, random.Random, bool], Expect | None]] = [
    modify,
    modify_and_rehash,
    delete,
    delete_and_renumber,
    insert,
    reorder,
    truncate,
    rewrite_tail,
    forge_signature,
]

events = st.builds(
    AuditEvent,
    action=st.sampled_from(["auth.login.ok", "generation.completed", "admin.policy.changed"]),
    actor=st.text(min_size=1, max_size=12),
    target=st.text(max_size=12),
    outcome=st.sampled_from(["success", "failure", "denied"]),
    details=st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=8) | st.none(), max_size=3),
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audit-template") / "enclave.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit-tamper")


def _build(engine: Engine, keys: AuditKeys, batch: list[AuditEvent], checkpoint: bool) -> None:
    with AuditLog(engine, keys, checkpoint_every=10**9) as audit:
        futures = [audit.submit(e) for e in batch]
        assert [f.result() for f in futures] == list(range(1, len(batch) + 1))
        if checkpoint:
            audit.checkpoint()


def _check(engine: Engine, keys: AuditKeys, mutation: Any, n: int, rng: random.Random, cp: bool) -> None:
    with tampering(engine) as conn:
        expected = mutation(conn, n, rng, cp)
    if expected is None:
        return
    report = AuditLog(engine, keys).verify()
    assert report.problem is not None, f"{mutation.__name__}: not detected"
    assert (report.problem.seq, report.problem.kind) == expected, (mutation.__name__, str(report.problem))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(events, min_size=1, max_size=14),
    checkpoint=st.booleans(),
    mutation=st.sampled_from(MUTATIONS),
    seed=st.integers(0, 2**32),
)
def test_every_mutation_is_detected_at_its_place(
    template: Path,
    scratch: Path,
    keys: AuditKeys,
    batch: list[AuditEvent],
    checkpoint: bool,
    mutation: Any,
    seed: int,
) -> None:
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        path = Path(tmp) / "enclave.db"
        shutil.copy(template, path)
        engine = make_engine(f"sqlite:///{path}")
        try:
            _build(engine, keys, batch, checkpoint)
            assert AuditLog(engine, keys).verify().ok
            _check(engine, keys, mutation, len(batch), random.Random(seed), checkpoint)
        finally:
            engine.dispose()


def _reset(engine: Engine) -> None:
    with tampering(engine) as conn:
        for table in ("audit_events", "audit_checkpoints", "audit_sealed"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("UPDATE audit_chain_head SET seq = 0, hash = :h"), {"h": GENESIS_HASH})


def test_every_mutation_on_both_backends(engine: Engine, keys: AuditKeys) -> None:
    for mutation in MUTATIONS:
        _reset(engine)
        _build(engine, keys, [AuditEvent(action="auth.login.ok", actor=f"u{n}") for n in range(6)], True)
        _check(engine, keys, mutation, 6, random.Random(7), True)


def test_a_checkpoint_file_from_another_key_is_refused(log: AuditLog) -> None:
    log.append(AuditEvent(action="auth.login.ok", actor="a"))
    other = AuditLog(log.engine, AuditKeys.generate()).checkpoint()
    report = log.verify(checkpoint=other)
    assert report.problem is not None and report.problem.kind == "bad-signature"
    assert "another key" in report.problem.message


def test_a_cut_tail_is_caught_by_an_exported_checkpoint_even_with_the_head_moved(log: AuditLog) -> None:
    for n in range(5):
        log.append(AuditEvent(action="auth.login.ok", actor=f"u{n}"))
    exported = log.checkpoint()  # kept off the box
    with tampering(log.engine) as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq > 3"))
        conn.execute(text("DELETE FROM audit_checkpoints"))
        _set_head(conn)
    assert log.verify().ok  # nothing on the box betrays it...
    report = log.verify(checkpoint=exported)  # ...but the exported checkpoint does
    assert report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (4, "truncated")


def test_a_deleted_chain_head_fails_appends_closed_and_verify_says_so(sqlite_log: AuditLog) -> None:
    sqlite_log.append(AuditEvent(action="auth.login.ok", actor="a"))
    with tampering(sqlite_log.engine) as conn:
        conn.execute(text("DELETE FROM audit_chain_head"))
    with pytest.raises(AuditUnavailableError, match="head row is missing"):
        sqlite_log.append(AuditEvent(action="auth.login.ok", actor="b"))
    report = sqlite_log.verify()
    assert report.problem is not None and "head row is missing" in report.problem.message
