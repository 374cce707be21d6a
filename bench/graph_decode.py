"""Decode-step latency of the V4 graphs on ONNX Runtime's CPU provider, against transformers as the peer.

    .venv/bin/python bench/graph_decode.py [--steps 32] [--threads 2]
    .venv/bin/python bench/graph_decode.py --compare [REV] [--flash]


Builds a small random V4 model (every layer type, 32 experts), prefills 64 tokens, then times single-
token decode steps: the portable-MoE graph, the com.microsoft.MoE graph and the int8 / int4 graphs
(MatMulNBits + QMoE; also without MatMulNBits' accuracy_level, "acc0") at batch 1 and batch 8 (rows at different positions, state updated in place
through IO binding, as docs/bundle.md allows),
and transformers' own cached decode at batch 1 — the peer measured in the same run. Prints ms per step
and tokens/s, and each graph's ratio to the peer. CPU figures: they rank the paths, they say nothing
about the GPU (see /work/shared/gpu/README.md for what decides speed there).

``--compare REV`` (default 0432a45, main before the node cuts of issue 18): the same random model built
by this tree and by ``REV`` (checked out with ``git worktree add --detach`` into a temporary directory,
removed after), each measured in its own subprocess: nodes per layer by layer kind (outside the
Sinkhorn normalizations / Sinkhorn / outside the layers) and int8 (moe=ort) decode ms/token at batch 1
and 8, with this tree's ratio to ``REV``. With ``--flash``, at V4-Flash's per-tensor dimensions.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

# --tree DIR: import the appliance (and the test helpers) from another checkout (--compare's baseline).
sys.path.insert(
    0,
    sys.argv[sys.argv.index("--tree") + 1]
    if "--tree" in sys.argv
    else str(Path(__file__).resolve().parents[1]),
)

from appliance.model.graph import Checkpoint, build_graphs, graph_io, state_shape
from appliance.model.graph.builder import MATMUL_ACCURACY
from tests.helpers.v4_reference import StateDictCheckpoint, reference_model, tiny_config

HERE = Path(__file__).resolve().parents[1]
TREE = Path(sys.path[0]).resolve()
PREFILL = 64
MAX_CONTEXT = 256
BASELINE = "0432a45"
KIND_LABELS = {
    "sliding_attention": "sliding",
    "compressed_sparse_attention": "CSA",
    "heavily_compressed_attention": "HCA",
}
# The --compare model: every layer kind (sliding + hash MoE, CSA, HCA); the default mode's model.
SMALL: dict[str, object] = {
    "hidden_size": 256, "q_lora_rank": 128, "o_lora_rank": 64, "num_attention_heads": 8, "head_dim": 64,
    "o_groups": 4, "moe_intermediate_size": 128, "n_routed_experts": 32, "num_experts_per_tok": 4,
    "vocab_size": 2048, "sliding_window": 32, "index_topk": 8,
}  # fmt: skip


def time_graph(
    ckpt: Checkpoint,
    moe: str,
    batch: int,
    steps: int,
    threads: int,
    quant: str = "none",
    accuracy_level: int = MATMUL_ACCURACY,
    graph: onnx.ModelProto | None = None,
) -> float:
    if graph is None:
        graph = build_graphs(ckpt, moe=moe, quant=quant, accuracy_level=accuracy_level)[0]
    io = graph_io(ckpt.config)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    buffers = {
        e["input"]: ort.OrtValue.ortvalue_from_numpy(
            np.zeros(state_shape(e, batch=batch, max_context=MAX_CONTEXT), np.float32)
        )
        for e in io["state"]
    }
    rng = np.random.default_rng(0)
    positions = PREFILL + np.arange(batch, dtype=np.int64) * 3  # rows at different positions
    times = []
    for step in range(steps + 3):
        binding = session.io_binding()
        binding.bind_cpu_input(
            "input_ids", rng.integers(0, ckpt.config.vocab_size, (batch, 1)).astype(np.int64)
        )
        binding.bind_cpu_input("positions", positions + step)
        for e in io["state"]:
            binding.bind_ortvalue_input(e["input"], buffers[e["input"]])
            binding.bind_ortvalue_output(e["output"], buffers[e["input"]])
        binding.bind_output("logits")
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        if step >= 3:  # warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_reference(model: torch.nn.Module, steps: int) -> float:
    ids = torch.randint(0, model.config.vocab_size, (1, PREFILL))
    times = []
    with torch.no_grad():
        out = model(ids, use_cache=True)
        cache = out.past_key_values
        for step in range(steps + 3):
            token = torch.randint(0, model.config.vocab_size, (1, 1))
            start = time.perf_counter()
            out = model(token, past_key_values=cache, use_cache=True)
            if step >= 3:
                times.append(time.perf_counter() - start)
            cache = out.past_key_values
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--flash", action="store_true",
        help="instead: int8 decode at V4-Flash's per-tensor dimensions (3 layers, 4 experts), with and "
        "without MatMulNBits' accuracy_level",
    )  # fmt: skip
    parser.add_argument(
        "--compare", nargs="?", const=BASELINE, metavar="REV",
        help=f"instead: nodes per layer and int8 decode of this tree against git revision REV (default {BASELINE})",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="--compare: measurements of each tree, in turn")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # --compare's subprocess
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.flash, args.steps, args.threads)))
        return
    if args.compare:
        compare(args.compare, args.flash, args.steps, args.threads, args.rounds)
        return
    if args.flash:
        flash(args.steps, args.threads)
        return
    torch.set_num_threads(args.threads)
    config = tiny_config(**SMALL)
    model = reference_model(config)
    ckpt = StateDictCheckpoint(model)
    peer = time_reference(model, args.steps)
    print(
        f"random V4: hidden 256, 4 layers (sliding, CSA, HCA, CSA), 32 experts top-4, {args.threads} threads"
    )
    print(f"peer  transformers cached decode, batch 1: {peer * 1e3:7.2f} ms/step {1 / peer:8.1f} tok/s")
    # "acc0": MatMulNBits without accuracy_level (fp32 compute on CPU), as graphs were built before.
    for label, moe, quant, accuracy in (
        ("moe=portable", "portable", "none", MATMUL_ACCURACY), ("moe=ort", "ort", "none", MATMUL_ACCURACY),
        ("int8", "portable", "int8", MATMUL_ACCURACY), ("int8 acc0", "portable", "int8", 0),
        ("int4", "portable", "int4", MATMUL_ACCURACY), ("int4 acc0", "portable", "int4", 0),
    ):  # fmt: skip
        for batch in (1, 8):
            t = time_graph(ckpt, moe, batch, args.steps, args.threads, quant, accuracy)
            print(
                f"graph {label:<12} batch {batch}:    {t * 1e3:7.2f} ms/step {batch / t:8.1f} tok/s"
                f"  ({peer / t * batch:5.2f}x the peer's tokens/s)"
            )


def flash(steps: int, threads: int) -> None:
    """The graphs of tests/appliance/model/test_flash_dims.py's checkpoint, int8, batch 1: the same
    model decoded with MatMulNBits computing in int8 (accuracy_level 4) and in fp32 (unset, as
    before), each the other's peer."""
    import tempfile

    from appliance.model.checkpoint import open_checkpoint
    from appliance.model.demo import write_random_checkpoint
    from tests.appliance.model.test_flash_dims import FLASH

    with tempfile.TemporaryDirectory(prefix="enclave-bench-flash-") as tmp:
        ckpt = open_checkpoint(write_random_checkpoint(Path(tmp) / "ckpt", FLASH))
        times = {a: time_graph(ckpt, "portable", 1, steps, threads, "int8", a) for a in (0, MATMUL_ACCURACY)}  # type: ignore[arg-type]
    print(f"V4-Flash dims, 3 layers (sliding, CSA, HCA), 4 experts top-2, int8, batch 1, {threads} threads")
    for a, t in times.items():
        print(f"accuracy_level {a}: {t * 1e3:8.1f} ms/token  ({times[0] / t:4.2f}x accuracy_level 0's speed)")


def count_nodes(graph: onnx.ModelProto, layer_types: list[str], mlp_types: list[str]) -> dict[str, object]:
    """Nodes of each layer kind's first layer, outside the Sinkhorn normalizations and in them, and
    the nodes outside every layer."""
    per: collections.Counter[int] = collections.Counter()
    sinkhorn: collections.Counter[int] = collections.Counter()
    outside = 0
    for node in graph.graph.node:
        m = re.match(r"/model/layers\.(\d+)/", node.name)
        if m is None:
            outside += 1
        elif "/sinkhorn/" in node.name:
            sinkhorn[int(m.group(1))] += 1
        else:
            per[int(m.group(1))] += 1
    kinds: dict[str, list[int]] = {}
    for layer, kind in enumerate(layer_types):
        label = KIND_LABELS.get(kind, kind) + (" + hash MoE" if mlp_types[layer] == "hash_moe" else "")
        kinds.setdefault(label, [per[layer], sinkhorn[layer]])
    return {"kinds": kinds, "outside": outside, "total": len(graph.graph.node)}


def measure(flash_dims: bool, steps: int, threads: int) -> dict[str, object]:
    """--compare's subprocess: this process's tree (``--tree``) builds the model and measures it."""
    import appliance

    if TREE not in Path(appliance.__file__).resolve().parents:
        raise SystemExit(f"appliance imported from {appliance.__file__}, not from {TREE}")
    with tempfile.TemporaryDirectory(prefix="enclave-bench-compare-") as tmp:
        if flash_dims:
            from appliance.model.checkpoint import open_checkpoint
            from appliance.model.demo import write_random_checkpoint
            from tests.appliance.model.test_flash_dims import FLASH

            ckpt: Checkpoint = open_checkpoint(write_random_checkpoint(Path(tmp) / "ckpt", FLASH))
            batches: tuple[int, ...] = (1,)
        else:
            ckpt = StateDictCheckpoint(reference_model(tiny_config(**SMALL)))
            batches = (1, 8)
        graph = build_graphs(ckpt, moe="ort", quant="int8")[0]
        nodes = count_nodes(graph, list(ckpt.config.layer_types), list(ckpt.config.mlp_layer_types))
        ms = {b: time_graph(ckpt, "ort", b, steps, threads, graph=graph) * 1e3 for b in batches}
    return {**nodes, "ms": ms}


def compare(rev: str, flash_dims: bool, steps: int, threads: int, rounds: int) -> None:
    """This tree against ``rev``, each measured in a subprocess on the same random model, ``rounds``
    times in turn; each batch's fastest round counts (the box is shared: the slower rounds are the
    neighbours' load)."""
    flags = ["--measure", "--steps", str(steps), "--threads", str(threads)] + (
        ["--flash"] if flash_dims else []
    )
    env = {**os.environ, "PYTHONPATH": ""}

    def run(tree: Path) -> dict[str, object]:
        cmd = [sys.executable, str(Path(__file__).resolve()), *flags, "--tree", str(tree)]
        out = subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory(prefix="enclave-bench-base-") as tmp:
        base_tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(HERE), "worktree", "add", "--detach", "-q", str(base_tree), rev], check=True
        )
        try:
            base = run(base_tree)
        finally:
            subprocess.run(
                ["git", "-C", str(HERE), "worktree", "remove", "--force", str(base_tree)], check=True
            )
    after = run(HERE)
    head = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dims = (
        "V4-Flash dims, 3 layers, 4 experts top-2" if flash_dims else "hidden 256, 4 layers, 32 experts top-4"
    )
    print(f"random V4 ({dims}), int8, moe=ort, {threads} threads: {rev} (before) against this tree "
          f"({head.stdout.strip()}{'+changes' if _dirty() else ''}, after)")  # fmt: skip
    print(f"{'nodes per layer':<36}{'before':>8}{'after':>8}{'ratio':>8}")
    for kind, (b_out, b_sk) in base["kinds"].items():  # type: ignore[attr-defined]
        a_out, a_sk = after["kinds"][kind]  # type: ignore[index]
        print(f"  {kind + ', outside Sinkhorn':<34}{b_out:>8}{a_out:>8}{a_out / b_out:>8.2f}")
        print(f"  {kind + ', Sinkhorn':<34}{b_sk:>8}{a_sk:>8}{a_sk / max(b_sk, 1):>8.2f}")
    for key, label in (("outside", "outside the layers"), ("total", "whole graph")):
        b, a = base[key], after[key]
        print(f"  {label:<34}{b:>8}{a:>8}{a / b:>8.2f}")  # type: ignore[operator]
    print(f"{'decode ms/token':<36}{'before':>8}{'after':>8}{'ratio':>8}")
    for batch, b_ms in base["ms"].items():  # type: ignore[attr-defined]
        a_ms = after["ms"][batch]  # type: ignore[index]
        print(f"  batch {batch:<28}{b_ms / int(batch):>8.2f}{a_ms / int(batch):>8.2f}{a_ms / b_ms:>8.2f}")


def _dirty() -> bool:
    status = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain"], capture_output=True, text=True)
    return bool(status.stdout.strip())


if __name__ == "__main__":
    main()
