"""Benchmark ``enclave model build``: throughput and peak memory against checkpoint size.

Writes two random V4 checkpoints that differ only in depth (so the largest single tensor is the
same), builds each to a bundle in a fresh subprocess, and reports:

* build throughput, MB of checkpoint weights per second;
* peak resident memory of the build process (``ru_maxrss``), and the part above the process's own
  baseline after imports;
* the same peak for a peer measured in the same run: loading the whole checkpoint with
  ``safetensors.numpy.load_file`` (what a non-streaming builder starts with), and the ratio.

The claim it checks: the builder's memory follows the largest tensor, not the checkpoint — the
peer's grows with the checkpoint, ours stays flat.

    .venv/bin/python bench/build.py [--layers 4,16] [--hidden 256] [--experts 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

MB = 1e6


def _config(layers: int, hidden: int, experts: int) -> dict[str, object]:
    from appliance.model.demo import DEMO_CONFIG

    kinds = ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"]
    return {
        **DEMO_CONFIG,
        "hidden_size": hidden,
        "moe_intermediate_size": hidden,
        "q_lora_rank": hidden // 2,
        "num_attention_heads": 8,
        "head_dim": 64,
        "index_head_dim": 64,  # the indexer rotates the same rope dims as attention
        "o_groups": 4,
        "o_lora_rank": hidden // 4,
        "n_routed_experts": experts,
        "num_hidden_layers": layers,
        "layer_types": [kinds[i % 3] for i in range(layers)],
        "mlp_layer_types": ["hash_moe"] + ["moe"] * (layers - 1),
    }


def _child_build(ckpt: str, out: str) -> dict[str, float]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from appliance.model.bundle import build_bundle
    from appliance.model.graph import build_graphs  # noqa: F401 - imported before the baseline is taken

    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    build_bundle(ckpt, out, signing_key=Ed25519PrivateKey.generate(), version=1)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak": peak, "baseline": baseline}


def _child_load(ckpt: str) -> dict[str, float]:
    from safetensors.numpy import load_file

    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    tensors = {}
    for shard in sorted(Path(ckpt).glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak": peak, "baseline": baseline, "tensors": len(tensors)}


def _run_child(*args: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{result.stderr}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="4,16", help="depths of the two checkpoints (comma-separated)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        print(json.dumps(_child_build(*rest) if kind == "build" else _child_load(*rest)))
        return

    from appliance.model.checkpoint import open_checkpoint
    from appliance.model.demo import write_random_checkpoint

    rows = []
    with tempfile.TemporaryDirectory(prefix="enclave-bench-build-") as tmp:
        for layers in (int(x) for x in args.layers.split(",")):
            ckpt = Path(tmp) / f"ckpt-{layers}"
            write_random_checkpoint(ckpt, _config(layers, args.hidden, args.experts))
            opened = open_checkpoint(ckpt)
            size = opened.total_bytes
            largest = max(opened.stored_bytes(n) for n in opened.names())
            ours = _run_child("build", str(ckpt), str(Path(tmp) / f"bundle-{layers}"))
            peer = _run_child("load", str(ckpt))
            rows.append((layers, size, largest, ours, peer))

    print(f"{'layers':>6} {'ckpt MB':>8} {'largest MB':>10} {'build s':>8} {'MB/s':>7} "
          f"{'peak MB':>8} {'+base MB':>8} | {'peer peak':>9} {'+base MB':>8} {'ours/peer':>9}")
    for layers, size, largest, ours, peer in rows:
        print(
            f"{layers:>6} {size / MB:>8.1f} {largest / MB:>10.1f} {ours['seconds']:>8.2f} "
            f"{size / MB / ours['seconds']:>7.1f} {ours['peak'] / MB:>8.1f} "
            f"{(ours['peak'] - ours['baseline']) / MB:>8.1f} | {peer['peak'] / MB:>9.1f} "
            f"{(peer['peak'] - peer['baseline']) / MB:>8.1f} {ours['peak'] / peer['peak']:>9.2f}"
        )
    (l0, s0, _, o0, p0), (l1, s1, _, o1, p1) = rows[0], rows[-1]
    grow_ours = (o1["peak"] - o1["baseline"]) / max(o0["peak"] - o0["baseline"], 1)
    grow_peer = (p1["peak"] - p1["baseline"]) / max(p0["peak"] - p0["baseline"], 1)
    print(
        f"checkpoint grew x{s1 / s0:.2f} ({l0} -> {l1} layers): build memory above baseline grew x{grow_ours:.2f}, "
        f"peer (load_file) x{grow_peer:.2f}"
    )


if __name__ == "__main__":
    main()
