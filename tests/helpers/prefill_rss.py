"""Peak memory of one prefill call of a bundle, measured in a fresh process.

    python -m tests.helpers.prefill_rss BUNDLE_DIR TOKENS [--context N] [--threads N]
    -> one JSON line: tokens, anon_mib (after loading), grown_mib (the prefill's peak above it),
       file_mib (weights paged in by the call), finite

The child opens the bundle's stages with the engine's runner (as ``enclave generate`` does) and
prefills ``TOKENS`` tokens in one call. What the call's activations take is anonymous memory
(``RssAnon``): ONNX Runtime's CPU arena keeps what it grew to, and a thread samples it every
millisecond meanwhile, so the larger of the two is the call's peak. Weights are memory-mapped from
the bundle's data files and count as file pages (``RssFile``) as the call first reads them: reported
apart, they are not the prefill's working set. ``measure_prefill`` runs it and parses the line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def measure_prefill(bundle_dir: Path, tokens: int, *, context: int = 512, threads: int = 2) -> dict[str, Any]:
    """Run this module in a child process; its JSON result."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.helpers.prefill_rss", str(bundle_dir), str(tokens),
         "--context", str(context), "--threads", str(threads)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


class _Sampler(threading.Thread):
    """The highest RssAnon seen while running."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _status_mib("RssAnon")
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.001):
            self.peak = max(self.peak, _status_mib("RssAnon"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", type=Path)
    parser.add_argument("tokens", type=int)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from appliance.engine.runner import OrtRunner
    from appliance.engine.sequence import Sequence
    from appliance.engine.types import SamplingParams

    info = json.loads((args.bundle / "bundle.json").read_text())
    runner = OrtRunner(
        args.bundle, info["io"], num_slots=1, max_context=args.context,
        intra_op_threads=args.threads, prefill_chunk=args.tokens,
    )  # fmt: skip
    ids = [0] + [10 + (7 * i) % 490 for i in range(args.tokens - 1)]
    seq = Sequence("rss", ids, SamplingParams(max_tokens=1))
    seq.slot = 0
    gc.collect()
    anon, file = _status_mib("RssAnon"), _status_mib("RssFile")
    sampler = _Sampler()
    sampler.start()
    logits = runner.run("prefill", [seq])
    sampler.done.set()
    sampler.join()
    peak = max(sampler.peak, _status_mib("RssAnon"))
    print(json.dumps({
        "tokens": args.tokens, "anon_mib": round(anon), "grown_mib": round(peak - anon),
        "file_mib": round(_status_mib("RssFile") - file), "finite": bool(np.isfinite(logits).all()),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
