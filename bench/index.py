"""Benchmark the desktop's project index on a real tree: the Python standard library's sources.

Prints indexing throughput (files/s) and the latency of context assembly (p50/p95), each with a
ratio against a peer measured in the same run:

* indexing vs a plain read of every file (read + decode, no index): how close to I/O-bound we are;
* context assembly vs a naive scan+grep of the tree for the same question words (what a client
  without an index would have to do per question).

Goals (issue #7): >= 1,000 files/s indexed, context p95 <= 50 ms.

    .venv/bin/python bench/index.py [--root DIR] [--queries N]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desktop.project.context import ContextRequest, assemble
from desktop.project.index import ProjectIndex
from desktop.project.scan import read_text, scan
from desktop.project.symbols import identifiers

# Third-party packages installed into the interpreter are not the standard library.
POLICY = ("site-packages/", "dist-packages/")


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _naive_grep(root: Path, words: list[str]) -> int:
    pattern = re.compile("|".join(re.escape(w) for w in words))
    found = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__")]
        for name in filenames:
            text = read_text(Path(dirpath) / name)
            if text is not None and pattern.search(text):
                found += 1
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(os.__file__).parent)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--grep-queries", type=int, default=5)
    args = parser.parse_args()
    root: Path = args.root.resolve()

    # Peer 1: read and decode every file the scanner admits, nothing else.
    t0 = time.perf_counter()
    result = scan(root, policy_patterns=POLICY)
    readable = sum(1 for f in result.files if read_text(root / f.rel) is not None)
    read_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        index = ProjectIndex(root, Path(tmp) / "index.sqlite", policy_patterns=POLICY)
        load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        t0, c0, w0 = time.perf_counter(), time.process_time(), time.thread_time()
        stats = index.refresh()
        index_s, index_cpu = time.perf_counter() - t0, time.process_time() - c0
        # refresh() writes on the calling thread while other threads walk and read: on an idle
        # machine with two cores or more, the writer's CPU time is about the wall-clock time.
        writer_cpu = time.thread_time() - w0
        t0 = time.perf_counter()
        again = index.refresh()
        refresh_s = time.perf_counter() - t0

        rng = random.Random(7)
        py_files = [p for p in index.paths() if p.endswith(".py")]
        requests: list[ContextRequest] = []
        for _ in range(args.queries):
            path = rng.choice(py_files)
            text = read_text(root / path) or ""
            n = max(1, text.count("\n"))
            cursor = rng.randint(1, n)
            words = identifiers(text) or ["open"]
            question = "how does " + " ".join(rng.sample(words, min(3, len(words)))) + " work"
            selection = (cursor, min(n, cursor + 8)) if rng.random() < 0.5 else None
            recent = rng.sample(py_files, 2)
            requests.append(ContextRequest(question, path, text, cursor, selection, (max(1, cursor - 25), cursor + 25), recent))
        latencies = []
        cpu_ms = []
        items = []
        for req in requests:
            t0, c0 = time.perf_counter(), time.thread_time()
            ctx = assemble(index, req, budget=3000)
            latencies.append((time.perf_counter() - t0) * 1000)
            cpu_ms.append((time.thread_time() - c0) * 1000)
            items.append(len(ctx.items))
        grep_ms = []
        for req in requests[: args.grep_queries]:
            words = [w for w in identifiers(req.question) if w not in ("how", "does", "work")]
            t0 = time.perf_counter()
            _naive_grep(root, words or ["open"])
            grep_ms.append((time.perf_counter() - t0) * 1000)
        index.close()

    files_per_s = stats.indexed / index_s
    read_per_s = readable / read_s
    p50, p95 = _p(latencies, 0.50), _p(latencies, 0.95)
    print(f"tree: {root} ({len(result.files)} files admitted, {len(result.skipped)} skipped)")
    print(f"index: {stats.indexed} files in {index_s:.2f} s = {files_per_s:,.0f} files/s (goal >= 1,000); "
          f"{index_cpu:.2f} CPU-s in all, {writer_cpu:.2f} CPU-s on the writing thread "
          f"(bound: {stats.indexed / writer_cpu:,.0f} files/s); load average {load_before:.1f} before")
    print(f"  peer, plain read+decode: {readable} files in {read_s:.2f} s = {read_per_s:,.0f} files/s; "
          f"index/read ratio {files_per_s / read_per_s:.2f}")
    print(f"refresh with nothing changed: {refresh_s * 1000:.0f} ms ({again.unchanged} unchanged)")
    print(f"context assembly ({len(latencies)} questions, budget 3000 tokens, "
          f"{statistics.mean(items):.1f} items avg): p50 {p50:.1f} ms, p95 {p95:.1f} ms (goal <= 50 ms); "
          f"CPU time p95 {_p(cpu_ms, 0.95):.1f} ms")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at the end (wall-clock figures grow with load)")
    g50 = statistics.median(grep_ms)
    print(f"  peer, naive scan+grep per question ({len(grep_ms)} questions): p50 {g50:.0f} ms; "
          f"speed-up at p50 {g50 / p50:,.0f}x, naive p50 / indexed p95 {g50 / p95:,.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
