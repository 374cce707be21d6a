"""Many writers — threads, replicas, processes — make one gap-free chain; kill -9 loses nothing
acknowledged and leaves a sound database."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import Engine, text

from appliance.audit import AuditEvent, AuditKeys, AuditLog, create_audit_keys, load_audit_keys
from appliance.db.engine import make_engine

ROOT = Path(__file__).resolve().parents[3]


def _stored_seqs(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT seq FROM audit_events ORDER BY seq"))]


def _hammer(log: AuditLog, threads: int, each: int, tag: str, results: list[int]) -> list[threading.Thread]:
    lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(each):
            seq = log.append(AuditEvent(action="test.append", actor=f"{tag}-{t}", details={"i": i}))
            with lock:
                results.append(seq)

    return [threading.Thread(target=work, args=(t,)) for t in range(threads)]


def test_threads_and_replicas_share_one_gap_free_chain(engine: Engine, db_url: str, keys: AuditKeys) -> None:
    # Two AuditLogs on two engines stand for two appliance replicas on one database.
    replica = make_engine(db_url)
    results: list[int] = []
    with AuditLog(engine, keys, checkpoint_every=30) as a, AuditLog(replica, keys, checkpoint_every=30) as b:
        workers = _hammer(a, 8, 20, "a", results) + _hammer(b, 4, 20, "b", results)
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert sorted(results) == list(range(1, 241))
        assert _stored_seqs(engine) == list(range(1, 241))
        report = a.verify()
        assert report.ok and report.total == 240 and report.last_checkpoint is not None
    replica.dispose()


def _writer(url: str, keys_dir: Path, tag: str, threads: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.helpers.audit_writer",
            url,
            str(keys_dir),
            tag,
            str(threads),
            str(count),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_processes_share_one_gap_free_chain(engine: Engine, db_url: str, tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys = create_audit_keys(keys_dir)
    procs = [_writer(db_url, keys_dir, f"p{n}", 2, 20) for n in range(3)]
    acked: list[int] = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        acked += [int(line) for line in out.split()]
    assert sorted(acked) == list(range(1, 121))
    report = AuditLog(engine, keys).verify()
    assert report.ok and report.total == 120


def _kill_writer_mid_append(url: str, keys_dir: Path, rng: random.Random, round_: int) -> set[int]:
    proc = _writer(url, keys_dir, f"crash{round_}", 4, 0)
    assert proc.stdout is not None
    acked: set[int] = set()
    wanted = rng.randint(1, 150)
    while len(acked) < wanted:
        line = proc.stdout.readline()
        assert line, "writer died on its own"
        acked.add(int(line))
    time.sleep(rng.random() * 0.02)  # land anywhere in the append/commit cycle
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate()
    acked |= {int(s) for s in rest.split("\n")[:-1] if s}  # only complete lines were acknowledged
    assert proc.returncode == -signal.SIGKILL
    return acked


def test_kill_9_mid_append_keeps_the_database_sound_and_every_acknowledged_event(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    keys_dir = tmp_path / "keys"
    create_audit_keys(keys_dir)
    keys = load_audit_keys(keys_dir)
    rng = random.Random(20261128)
    acked: set[int] = set()
    rounds = 6 if db_url.startswith("sqlite") else 3
    for round_ in range(rounds):
        acked |= _kill_writer_mid_append(db_url, keys_dir, rng, round_)
        if db_url.startswith("sqlite"):
            path = db_url.removeprefix("sqlite:///")
            with sqlite3.connect(path) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        report = AuditLog(engine, keys).verify()
        assert report.ok, str(report.problem)
        stored = set(_stored_seqs(engine))
        assert acked <= stored
        assert stored == set(range(1, len(stored) + 1))
    assert len(acked) > rounds


def test_a_forked_child_appends_through_its_own_writer(sqlite_engine: Engine, keys: AuditKeys) -> None:
    with AuditLog(sqlite_engine, keys) as audit:
        assert audit.append(AuditEvent(action="test.parent", actor="parent")) == 1
        pid = os.fork()
        if pid == 0:  # the child: exit status says whether its append worked
            try:
                code = 0 if audit.append(AuditEvent(action="test.child", actor="child")) == 2 else 1
            except BaseException:
                code = 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert audit.append(AuditEvent(action="test.parent", actor="parent")) == 3
        assert audit.verify().ok
