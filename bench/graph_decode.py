"""Decode-step latency of the V4 graphs on ONNX Runtime's CPU provider, against transformers as the peer.

    .venv/bin/python bench/graph_decode.py [--steps 32] [--threads 2]

Builds a small random V4 model (every layer type, 32 experts), prefills 64 tokens, then times single-
token decode steps: the portable-MoE graph, the com.microsoft.MoE graph and the int8 / int4 graphs
(MatMulNBits + QMoE; also without MatMulNBits' accuracy_level, "acc0") at batch 1 and batch 8 (rows at different positions, state updated in place
through IO binding, as docs/bundle.md allows),
and transformers' own cached decode at batch 1 — the peer measured in the same run. Prints ms per step
and tokens/s, and each graph's ratio to the peer. CPU figures: they rank the paths, they say nothing
about the GPU (see /work/shared/gpu/README.md for what decides speed there).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.model.graph import build_graphs, graph_io, state_shape
from appliance.model.graph.builder import MATMUL_ACCURACY
from tests.helpers.v4_reference import StateDictCheckpoint, reference_model, tiny_config

PREFILL = 64
MAX_CONTEXT = 256


def time_graph(
    ckpt: StateDictCheckpoint,
    moe: str,
    batch: int,
    steps: int,
    threads: int,
    quant: str = "none",
    accuracy_level: int = MATMUL_ACCURACY,
) -> float:
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
    args = parser.parse_args()
    if args.flash:
        flash(args.steps, args.threads)
        return
    torch.set_num_threads(args.threads)
    config = tiny_config(
        hidden_size=256, q_lora_rank=128, o_lora_rank=64, num_attention_heads=8, head_dim=64, o_groups=4,
        moe_intermediate_size=128, n_routed_experts=32, num_experts_per_tok=4, vocab_size=2048,
        sliding_window=32, index_topk=8,
    )  # fmt: skip
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


if __name__ == "__main__":
    main()
