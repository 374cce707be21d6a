"""Load test of the appliance API: concurrent streaming clients over TLS on loopback, against the same
engine called in-process, in the same run.

    .venv/bin/python bench/serve.py [--clients 128] [--requests-per-client 1] [--max-tokens 32]
                                    [--slots 16] [--threads 0] [--sequential 16]
                                    [--rounds 3]

It prepares what ``enclave demo`` prepares (a data directory, the demo model installed, a developer
token; the team's quotas lifted so the load is not refused), then runs two phases on the real engine
(AsyncEngine on ONNX Runtime, the demo bundle):

1. in-process: the engine's own ``encode_chat`` + ``stream`` from asyncio tasks — no HTTP, no auth,
   no audit;
2. API: ``enclave serve`` in a subprocess, with the clients here streaming ``/v1/chat/completions``
   over TLS (pinned CA), each request authenticated, quota-checked and audited before and after.

Both phases send identical greedy requests, so they generate identical tokens. Each runs the load at
``--clients`` concurrency and then ``--sequential`` requests one at a time (where a request's
latency is not queueing behind others). Prints, per phase: completed/errors, completion tokens/s,
time to first token p50/p99, mean end-to-end latency; then the API's overhead per request (API mean
minus in-process mean) and that overhead as a share of the API's end-to-end time. The two sides run
alternately for ``--rounds`` rounds (figures are over all rounds), so background load on a shared
machine falls on both alike; the load average is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil

from appliance.api.runtime import load_engine
from appliance.api.server import SWITCH_INTERVAL_S
from appliance.auth import admin as ops
from appliance.commands.demo import prepare_demo
from appliance.config import Settings, load_settings
from appliance.db.base import utcnow
from appliance.db.engine import UnitOfWork, make_engine
from appliance.engine.engine import AsyncEngine
from appliance.engine.types import ChatMessage, SamplingParams

PROMPTS = [
    "def fibonacci(n):",
    "class Stack:\n    def push(self, item):",
    "import os\nfor path in",
    "# parse the config file and return a dict",
]


@dataclass
class Sample:
    ttft: float
    latency: float
    tokens: int


@dataclass
class Phase:
    name: str
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    # CPU seconds spent serving the phase: the engine's process in-process; the server's over the API.
    cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.samples)

    def pct(self, values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")

    def report(self) -> str:
        ttft = [s.ttft for s in self.samples]
        lat = [s.latency for s in self.samples]
        return (
            f"{self.name:<22} ok {len(self.samples):>4}  errors {len(self.errors):>3}  "
            f"{self.tokens / self.wall if self.wall else 0:>8.1f} tok/s  "
            f"TTFT p50 {self.pct(ttft, 0.5) * 1000:>7.1f} ms  p99 {self.pct(ttft, 0.99) * 1000:>7.1f} ms  "
            f"e2e mean {statistics.fmean(lat) * 1000 if lat else float('nan'):>8.1f} ms"
        )


def prompt_for(i: int) -> str:
    return PROMPTS[i % len(PROMPTS)]


# --- in-process ---------------------------------------------------------------------------------


async def inproc_one(engine: AsyncEngine, i: int, max_tokens: int, phase: Phase) -> None:
    start = time.perf_counter()
    ttft, tokens = None, 0
    try:
        ids = engine.encode_chat([ChatMessage("user", prompt_for(i))])
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        async for delta in engine.stream(ids, params, request_id=f"bench-{uuid.uuid4().hex}"):
            if ttft is None and delta.text:
                ttft = time.perf_counter() - start
            tokens = delta.completion_tokens
    except Exception as exc:
        phase.errors.append(f"{type(exc).__name__}: {exc}")
        return
    end = time.perf_counter() - start
    phase.samples.append(Sample(ttft if ttft is not None else end, end, tokens))


async def run_inproc(engine: AsyncEngine, name: str, n: int, concurrency: int, max_tokens: int) -> Phase:
    phase = Phase(name)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await inproc_one(engine, i, max_tokens, phase)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    phase.wall = time.perf_counter() - start
    return phase


# --- over the API -------------------------------------------------------------------------------


async def api_one(client: httpx.AsyncClient, i: int, max_tokens: int, model: str, phase: Phase) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt_for(i)}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    start = time.perf_counter()
    ttft, tokens, done = None, 0, False
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                phase.errors.append(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    phase.errors.append(f"stream error: {chunk['error']}")
                    return
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and ttft is None:
                    ttft = time.perf_counter() - start
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as exc:
        phase.errors.append(f"{type(exc).__name__}: {exc}")
        return
    end = time.perf_counter() - start
    if not done:
        phase.errors.append("stream ended without [DONE]")
        return
    phase.samples.append(Sample(ttft if ttft is not None else end, end, tokens))


async def run_api(
    url: str, ca: Path, token: str, model: str, name: str, n: int, concurrency: int, max_tokens: int
) -> Phase:
    phase = Phase(name)
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    async with httpx.AsyncClient(
        base_url=url,
        verify=ssl.create_default_context(cafile=str(ca)),
        headers={"Authorization": f"Bearer {token}"},
        limits=limits,
        timeout=httpx.Timeout(600.0),
    ) as client:

        async def one(i: int) -> None:
            async with gate:
                await api_one(client, i, max_tokens, model, phase)

        # One untimed request opens a connection and warms the server's code paths.
        await api_one(client, 0, 2, model, Phase("warm-up"))
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        phase.wall = time.perf_counter() - start
    return phase


# --- set-up -------------------------------------------------------------------------------------


def prepare(root: Path, slots: int, threads: int = 0) -> tuple[Settings, str]:
    settings, account = prepare_demo(root / "data")
    with settings.settings_file.open("a", encoding="utf-8") as fh:
        fh.write(f"max_batch = {slots}\nmax_waiting = 4096\nintra_op_threads = {threads}\n")
    db = make_engine(settings.db_url)
    try:
        with UnitOfWork(db)() as session:
            # A load test is not a user: lift the default team's quotas (recorded like any change).
            ops.set_policy(
                session,
                ops.DEFAULT_TEAM,
                now=utcnow(),
                requests_per_minute=None,
                tokens_per_minute=None,
                concurrent_streams=None,
            )
    finally:
        db.dispose()
    return load_settings(settings.data_dir), account.token


def start_server(settings: Settings) -> tuple[subprocess.Popen[str], str, Path]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--data", str(settings.data_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = ca = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("ENCLAVE_URL="):
            url = line.split("=", 1)[1].strip()
        elif line.startswith("ENCLAVE_CA="):
            ca = line.split("=", 1)[1].strip()
        if url and ca:
            break
    if not url or not ca:
        proc.kill()
        raise SystemExit(f"server did not start (exit {proc.wait()})")
    return proc, url, Path(ca)


def merge(name: str, phases: list[Phase]) -> Phase:
    merged = Phase(name)
    for phase in phases:
        merged.samples += phase.samples
        merged.errors += phase.errors
        merged.wall += phase.wall
        merged.cpu += phase.cpu
        merged.client_cpu += phase.client_cpu
    return merged


async def main_async(args: argparse.Namespace) -> int:
    # The same interpreter setting `enclave serve` uses, so the in-process peer runs as the server does.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    rounds: dict[str, list[Phase]] = {"in-load": [], "api-load": [], "in-seq": [], "api-seq": []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="enclave-bench-serve-") as tmp:
        settings, token = prepare(Path(tmp), args.slots, args.threads)
        n = args.clients * args.requests_per_client
        engine = load_engine(settings)
        model = engine.model_id
        print(
            f"engine: real AsyncEngine (ONNX Runtime, {settings.execution_provider}) on {model}, {args.slots} slots, "
            f"{args.threads or 'default'} intra-op threads; {args.clients} concurrent streaming clients x "
            f"{args.requests_per_client}, {args.max_tokens} max tokens, greedy; then {args.sequential} sequential "
            f"requests; {args.rounds} rounds alternating in-process and API; CPUs: {os.cpu_count()}"
        )
        proc, url, ca = start_server(settings)
        try:
            await run_inproc(engine, "warm-up", 4, 4, 2)
            server = psutil.Process(proc.pid)

            def server_cpu() -> float:
                times = server.cpu_times()
                return float(times.user + times.system)

            async def inproc(count: int, concurrency: int) -> Phase:
                before = time.process_time()
                phase = await run_inproc(engine, "", count, concurrency, args.max_tokens)
                phase.cpu = time.process_time() - before
                return phase

            async def api(count: int, concurrency: int) -> Phase:
                before, client_before = server_cpu(), time.process_time()
                phase = await run_api(url, ca, token, model, "", count, concurrency, args.max_tokens)
                phase.cpu, phase.client_cpu = server_cpu() - before, time.process_time() - client_before
                return phase

            # Alternating the two sides round by round exposes both to the same background load.
            for _ in range(args.rounds):
                rounds["in-load"].append(await inproc(n, args.clients))
                rounds["api-load"].append(await api(n, args.clients))
                rounds["in-seq"].append(await inproc(args.sequential, 1))
                rounds["api-seq"].append(await api(args.sequential, 1))
        finally:
            engine.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    in_load = merge(f"in-process x{args.clients}", rounds["in-load"])
    api_load = merge(f"API x{args.clients}", rounds["api-load"])
    in_seq = merge("in-process x1", rounds["in-seq"])
    api_seq = merge("API x1", rounds["api-seq"])
    print(f"load average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f}")
    for phase in (in_load, api_load, in_seq, api_seq):
        print(phase.report())
    errors = [e for p in (in_load, api_load, in_seq, api_seq) for e in p.errors]
    for label, local, remote in (("concurrent", in_load, api_load), ("sequential", in_seq, api_seq)):
        if local.samples and remote.samples:
            a = statistics.fmean(s.latency for s in remote.samples)
            b = statistics.fmean(s.latency for s in local.samples)
            tput = (remote.tokens / remote.wall) / (local.tokens / local.wall)
            print(
                f"API overhead per request ({label}): {(a - b) * 1000:.1f} ms = {(a - b) / a * 100:.1f}% of the API's "
                f"end-to-end time; API/in-process throughput {tput:.2f}x"
            )
            # CPU time per request hardly depends on what else the machine runs, unlike wall time.
            cpu_in = local.cpu / len(local.samples) * 1000
            cpu_api = remote.cpu / len(remote.samples) * 1000
            cpu_client = remote.client_cpu / len(remote.samples) * 1000
            print(
                f"CPU per request ({label}): in-process {cpu_in:.1f} ms; API server {cpu_api:.1f} ms "
                f"(+ {cpu_client:.1f} ms in the HTTPS clients); server CPU overhead {cpu_api - cpu_in:.1f} ms = "
                f"{(cpu_api - cpu_in) / cpu_api * 100:.1f}% of the server's CPU per request"
            )
    if errors:
        print(f"{len(errors)} errors, first: {errors[0]}")
        return 1
    print("errors: 0")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--requests-per-client", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--slots", type=int, default=16, help="engine slots (settings.max_batch)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running both sides")
    parser.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: ORT decides)"
    )
    parser.add_argument(
        "--sequential", type=int, default=16, help="requests sent one at a time after the load"
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
