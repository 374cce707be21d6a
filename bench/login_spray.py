"""Login p99 and generation p99 under a 48-thread login spray (issue 12, item 15), against the same
generation unloaded, in the same run.

    .venv/bin/python bench/login_spray.py [--threads 48] [--generations 20] [--max-tokens 16]

It prepares what ``enclave demo`` prepares (data directory, the demo model, a developer token,
quotas lifted) with ``trusted_proxies = "127.0.0.1"``, starts ``enclave serve`` (TLS, the real
engine on ONNX Runtime), then:

1. unloaded — ``--generations`` greedy chat completions one after another;
2. loaded — the same while ``--threads`` threads each sign in as fast as they can, every attempt
   a wrong password for a fresh user name from a fresh X-Forwarded-For address (a distributed
   spray behind the proxy: no throttle stops it early, so every attempt costs one Argon2id), one
   in eight the demo account's right password.

Prints generation p50/p99 for both phases and their ratio (goal: loaded p99 within 2x of
unloaded), login p50/p99 and attempts/s, and every answer that was neither 200, 401 nor 429 (a
"database is locked" 503 would show there).
"""

from __future__ import annotations

import argparse
import itertools
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.serve import prepare, start_server


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def generations(url: str, ca: Path, token: str, n: int, max_tokens: int) -> list[float]:
    latencies: list[float] = []
    with httpx.Client(
        base_url=url,
        verify=ssl.create_default_context(cafile=str(ca)),
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    ) as client:
        model = client.get("/v1/models").json()["data"][0]["id"]
        for i in range(n):
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"def task_{i}(items):"}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            start = time.perf_counter()
            r = client.post("/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - start)
            if r.status_code != 200:
                raise SystemExit(f"generation failed: HTTP {r.status_code} {r.text[:200]}")
    return latencies


class Spray:
    def __init__(self, url: str, ca: Path, username: str, password: str, threads: int) -> None:
        self.url, self.ca, self.username, self.password = url, ca, username, password
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.odd: list[str] = []
        self.counter = itertools.count()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        with httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.ca)), timeout=600) as c:
            while not self.stop.is_set():
                i = next(self.counter)
                body = (
                    {"username": self.username, "password": self.password}
                    if i % 8 == 0
                    else {"username": f"spray{i}", "password": f"wrong guess {i:08d}"}
                )
                headers = {"X-Forwarded-For": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"}
                start = time.perf_counter()
                try:
                    r = c.post("/v1/auth/login", json=body, headers=headers)
                    status, text = r.status_code, r.text
                except httpx.HTTPError as exc:
                    status, text = -1, f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - start
                with self.lock:
                    self.latencies.append(elapsed)
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    if status not in (200, 401, 429) and len(self.odd) < 5:
                        self.odd.append(f"{status} {text[:160]}")

    def __enter__(self) -> Spray:
        self.started = time.perf_counter()
        for t in self.threads:
            t.start()
        time.sleep(2.0)  # let the spray reach its steady state before measuring generation
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
        self.wall = time.perf_counter() - self.started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=48)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="enclave-spray-") as tmp:
        settings, token = prepare(Path(tmp), slots=4)
        with settings.settings_file.open("a", encoding="utf-8") as fh:
            fh.write('trusted_proxies = "127.0.0.1"\n')
        from appliance.commands.demo import DEMO_USER
        from appliance.config import load_settings

        settings = load_settings(settings.data_dir)
        password = _demo_password(settings)
        proc, url, ca = start_server(settings)
        try:
            generations(url, ca, token, 2, args.max_tokens)  # warm-up
            unloaded = generations(url, ca, token, args.generations, args.max_tokens)
            with Spray(url, ca, DEMO_USER, password, args.threads) as spray:
                loaded = generations(url, ca, token, args.generations, args.max_tokens)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    u99, l99 = pct(unloaded, 0.99), pct(loaded, 0.99)
    print(f"generation unloaded: p50 {statistics.median(unloaded) * 1000:.0f} ms  p99 {u99 * 1000:.0f} ms  (n={len(unloaded)})")
    print(f"generation under a {args.threads}-thread login spray: p50 {statistics.median(loaded) * 1000:.0f} ms  p99 {l99 * 1000:.0f} ms  (n={len(loaded)})")
    print(f"generation p99 loaded/unloaded: {l99 / u99:.2f}x (goal <= 2x)")
    attempts = len(spray.latencies)
    print(
        f"logins: {attempts} attempts in {spray.wall:.1f} s ({attempts / spray.wall:.0f}/s), "
        f"p50 {pct(spray.latencies, 0.5) * 1000:.0f} ms  p99 {pct(spray.latencies, 0.99) * 1000:.0f} ms; "
        f"statuses {dict(sorted(spray.statuses.items()))}"
    )
    for line in spray.odd:
        print(f"  unexpected answer: {line}")
    return 0 if not spray.odd else 1


def _demo_password(settings: object) -> str:
    """A known password for the demo account (prepare_demo's is not returned by bench.serve)."""
    from appliance.auth import admin as ops
    from appliance.auth.passwords import hash_password
    from appliance.commands.demo import DEMO_USER
    from appliance.db.engine import UnitOfWork, make_engine

    password = "spray-bench-correct-horse-42"
    db = make_engine(settings.db_url)  # type: ignore[attr-defined]
    try:
        with UnitOfWork(db)() as session:
            ops.get_user(session, DEMO_USER).password_hash = hash_password(password)
    finally:
        db.dispose()
    return password


if __name__ == "__main__":
    raise SystemExit(main())
