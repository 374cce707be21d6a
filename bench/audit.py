"""Audit log throughput: durable appends/s and verified events/s, on SQLite and PostgreSQL.

    .venv/bin/python bench/audit.py [--backend sqlite|postgresql|all] [--appends N] [--verify-events N]

Peers, measured in the same run on the same database:

* appends — the group-committed ``AuditLog.append`` against a naive writer that does the same
  chained append in one transaction (one fsync) per event (``append_in`` inside its own
  ``engine.begin()``), each with one writer thread and with eight concurrent writer threads,
  alternating in three rounds (medians printed);
* verify — ``AuditLog.verify`` (streaming, no JSON parsing) against a naive verifier that loads
  ORM rows, parses details/content and re-encodes every record with the reference ``record_hash``.

Every append counted here returned only after its transaction committed (SQLite WAL with
``synchronous=FULL``; PostgreSQL with ``synchronous_commit=on``). On a shared machine the wall-clock
figures move with the load; verification is also given per second of this process's CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from appliance.audit import AuditEvent, AuditKeys, AuditLog
from appliance.audit.chain import GENESIS_HASH, record_hash
from appliance.audit.models import AuditEventRow
from appliance.db import migrate
from appliance.db.engine import make_engine

ROUNDS = 3
PG_URL = os.environ.get("ENCLAVE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        action="generation.requested",
        actor=f"user{i % 50}",
        target=f"project:{i % 7}",
        request_id=f"req-{i:08d}",
        client_address="10.0.0.12",
        details={"model": "deepseek-v4-flash", "prompt_tokens": 812, "context_files": ["src/app.py"]},
    )


def _run_writers(writers: int, per_writer: int, append: Callable[[AuditEvent], object]) -> float:
    """Appends/s with ``writers`` threads each appending ``per_writer`` events, waiting for each."""
    barrier = threading.Barrier(writers + 1)

    def work(w: int) -> None:
        barrier.wait()
        for i in range(per_writer):
            append(_event(w * per_writer + i))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return writers * per_writer / (time.perf_counter() - start)


def _naive_append(engine: Engine, log: AuditLog) -> Callable[[AuditEvent], object]:
    def append(event: AuditEvent) -> object:
        with engine.begin() as conn:
            return log.append_in(conn, event)

    return append


def _naive_verify(engine: Engine) -> int:
    """The straightforward verifier: ORM objects, parsed JSON, reference encoding per record."""
    prev, expected, count = GENESIS_HASH, 1, 0
    with Session(engine) as session:
        for row in session.scalars(select(AuditEventRow).order_by(AuditEventRow.seq)).yield_per(5000):
            record = {
                "seq": row.seq,
                "time": row.time,
                "actor": row.actor,
                "action": row.action,
                "target": row.target,
                "outcome": row.outcome,
                "request_id": row.request_id,
                "client_address": row.client_address,
                "details": json.loads(row.details),
                "content": None if row.content is None else json.loads(row.content),
                "prev_hash": row.prev_hash,
            }
            if row.seq != expected or row.prev_hash != prev or record_hash(record) != row.hash:
                raise SystemExit(f"naive verifier: chain broken at seq {row.seq}")
            prev, expected, count = row.hash, expected + 1, count + 1
    return count


def _fill(log: AuditLog, target: int, start: int) -> None:
    """Grow the chain to ``target`` events quickly (many appends in flight, big group commits)."""
    pending = []
    for i in range(start, target):
        pending.append(log.submit(_event(i)))
        if len(pending) >= 5000:
            for f in pending:
                f.result()
            pending.clear()
    for f in pending:
        f.result()


def bench_backend(name: str, url: str, appends: int, verify_events: int) -> dict[str, float]:
    migrate.upgrade(url)
    engine = make_engine(url, pool_size=16) if name == "postgresql" else make_engine(url)
    keys = AuditKeys.generate()
    results: dict[str, float] = {}
    with AuditLog(engine, keys, checkpoint_every=1000) as log:
        naive = _naive_append(engine, log)
        for writers in (1, 8):
            per_writer = max(1, appends // writers // ROUNDS)
            group, plain = [], []
            # Alternate the two (and who goes first) in rounds: both should see the same machine.
            for r in range(ROUNDS):
                for which in ("group", "naive") if r % 2 == 0 else ("naive", "group"):
                    if which == "group":
                        group.append(_run_writers(writers, per_writer, log.append))
                    else:
                        plain.append(_run_writers(writers, per_writer, naive))
            suffix = "1 writer" if writers == 1 else f"{writers} writers"
            results[f"group {suffix}"] = statistics.median(group)
            results[f"naive {suffix}"] = statistics.median(plain)
        have = log.verify().total
        _fill(log, verify_events, have)
        start, cpu = time.perf_counter(), time.process_time()
        report = log.verify()
        results["verify"] = report.total / (time.perf_counter() - start)
        # Per second of this process's CPU: what the machine gives when it is not shared.
        results["verify cpu"] = report.total / (time.process_time() - cpu)
        if not report.ok:
            raise SystemExit(f"{name}: the benchmark's own chain does not verify: {report.problem}")
        start, cpu = time.perf_counter(), time.process_time()
        counted = _naive_verify(engine)
        results["naive verify"] = counted / (time.perf_counter() - start)
        results["naive verify cpu"] = counted / (time.process_time() - cpu)
        results["events"] = report.total
    engine.dispose()
    return results


def _pg_database() -> tuple[str, Callable[[], None]] | None:
    try:
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        name = f"enclave_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any failure means "no PostgreSQL to measure"
        print(f"postgresql: skipped ({type(exc).__name__}: {str(exc).splitlines()[0]})")
        return None

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return f"{PG_URL.rpartition('/')[0]}/{name}", drop


def report(name: str, r: dict[str, float]) -> None:
    print(f"\n{name}  ({int(r['events'])} events in the chain at verify time)")
    print(f"  durable appends/s, 1 writer   : {r['group 1 writer']:>10,.0f}   naive peer {r['naive 1 writer']:>8,.0f}"
          f"   ratio {r['group 1 writer'] / r['naive 1 writer']:.2f}x")  # fmt: skip
    print(f"  durable appends/s, 8 writers  : {r['group 8 writers']:>10,.0f}   naive peer {r['naive 8 writers']:>8,.0f}"
          f"   ratio {r['group 8 writers'] / r['naive 8 writers']:.2f}x")  # fmt: skip
    print(f"  verified events/s             : {r['verify']:>10,.0f}   naive peer {r['naive verify']:>8,.0f}"
          f"   ratio {r['verify'] / r['naive verify']:.2f}x")  # fmt: skip
    print(f"  verified events per CPU-second: {r['verify cpu']:>10,.0f}   naive peer {r['naive verify cpu']:>8,.0f}"
          f"   ratio {r['verify cpu'] / r['naive verify cpu']:.2f}x   (this process only)")  # fmt: skip


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--appends", type=int, default=2000, help="appends per measurement (default 2000)")
    parser.add_argument(
        "--verify-events", type=int, default=100_000, help="chain length to verify (default 100000)"
    )
    args = parser.parse_args()
    print(f"audit benchmark: {args.appends} appends per measurement, verify over {args.verify_events} events, "
          f"{os.cpu_count()} CPUs, load average {_load()}")  # fmt: skip
    if args.backend in ("sqlite", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            report("sqlite (WAL, synchronous=FULL)", bench_backend("sqlite", f"sqlite:///{tmp}/enclave.db",
                                                                   args.appends, args.verify_events))  # fmt: skip
    if args.backend in ("postgresql", "all"):
        made = _pg_database()
        if made is not None:
            url, drop = made
            try:
                report("postgresql", bench_backend("postgresql", url, args.appends, args.verify_events))
            finally:
                drop()
    # The machine is shared: the load says how much of it these figures had.
    print(f"\nload average at the end: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
