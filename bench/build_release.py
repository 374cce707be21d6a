"""``enclave model build`` on a release-layout checkpoint at V4-Flash's real per-tensor dimensions.

    .venv/bin/python bench/build_release.py [--layers 3] [--experts 8] [--vocab 129280] [--quant none,int8,int4]

Writes a checkpoint the way DeepSeek's release stores V4-Flash — dense projections FP8 e4m3 with a
UE8M0 scale per 128x128 block, routed experts FP4 e2m1 (two per int8) with a UE8M0 scale per 32
inputs, one file entry per expert and projection, embeddings / head / router / norms in float32 —
tensor by tensor (hidden 4096, 64 heads x 512, ranks 1024, 8 output groups, indexer 64 x 128,
experts x 2048; layers sliding + hash MoE, CSA, HCA, repeated), then builds it once per ``--quant``
in a fresh subprocess and prints, per build:

* throughput, MB of checkpoint per second (the issue's goal: >= 200 MB/s), and the peer measured in
  the same run: reading every tensor of the checkpoint as stored (what any build must at least do),
  its MB/s and the ratio;
* peak resident memory of the build (VmHWM) against the checkpoint's largest tensor;
* the graph's nodes per layer (by layer kind), and how many of them are the hyper-connections' Sinkhorn normalizations.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.build import _peak_rss, _run_child

MB = 1e6
KINDS = ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"]


def flash_config(layers: int, experts: int, vocab: int) -> dict[str, Any]:
    from appliance.model.demo import RANDOM_CONFIG

    return {
        **RANDOM_CONFIG,
        "vocab_size": vocab, "hidden_size": 4096, "num_attention_heads": 64, "head_dim": 512,
        "partial_rotary_factor": 0.125, "q_lora_rank": 1024, "o_groups": 8, "o_lora_rank": 1024,
        "moe_intermediate_size": 2048, "n_routed_experts": experts, "num_experts_per_tok": min(6, experts),
        "index_n_heads": 64, "index_head_dim": 128, "index_topk": 512, "sliding_window": 128,
        "compress_rates": {"compressed_sparse_attention": 4, "heavily_compressed_attention": 128},
        "hc_mult": 4, "num_hidden_layers": layers, "layer_types": [KINDS[i % 3] for i in range(layers)],
        "mlp_layer_types": ["hash_moe" if i == 0 else "moe" for i in range(layers)],
        "quantization_config": {
            "quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0", "weight_block_size": [128, 128],
            "activation_scheme": "dynamic", "expert_dtype": "fp4",
        },
    }  # fmt: skip


def write_release_checkpoint(out: Path, raw: dict[str, Any]) -> int:
    """The release layout, one tensor in memory at a time; returns the bytes written."""
    import json

    from appliance.model.checkpoint import expected_tensors
    from appliance.model.config import V4Config
    from appliance.model.demo import _demo_tensor, write_tokenizer
    from appliance.model.safetensors_io import TensorSpec, write_file
    from tests.helpers.v4_release import _is_fp8_candidate, release_name

    config = V4Config.from_dict(raw)
    specs: list[TensorSpec] = []
    source: dict[
        str, tuple[str, tuple[int, ...], str, int | None]
    ] = {}  # spec -> (state name, shape, part, expert)

    def quantized(name: str, state: str, shape: tuple[int, ...], fp4: bool, expert: int | None) -> None:
        rows, cols = shape
        base = name.removesuffix(".weight")
        if fp4:
            specs.extend(
                [
                    TensorSpec(name, "I8", (rows, cols // 2)),
                    TensorSpec(base + ".scale", "F8_E8M0", (rows, cols // 32)),
                ]
            )
        else:
            blocks = (-(-rows // 128), -(-cols // 128))
            specs.extend([TensorSpec(name, "F8_E4M3", shape), TensorSpec(base + ".scale", "F8_E8M0", blocks)])
        source[name] = (state, shape, "q", expert)
        source[base + ".scale"] = (state, shape, "s", expert)

    for state, shape in expected_tensors(config).items():
        m = re.match(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$", state)
        if m:
            layer, kind = m.groups()
            for e in range(shape[0]):
                prefix = f"layers.{layer}.ffn.experts.{e}."
                if kind == "gate_up_proj":
                    half = shape[1] // 2
                    quantized(prefix + "w1.weight", state + ":w1", (half, shape[2]), True, e)
                    quantized(prefix + "w3.weight", state + ":w3", (half, shape[2]), True, e)
                else:
                    quantized(prefix + "w2.weight", state, (shape[1], shape[2]), True, e)
            continue
        name = release_name(state)
        if state.endswith("tid2eid"):
            specs.append(TensorSpec(name, "I64", shape))
        elif _is_fp8_candidate(state, np.empty((0,) * len(shape))):
            quantized(name, state, shape, False, None)
            continue
        else:
            specs.append(TensorSpec(name, "F32", shape))
        source[name] = (state, shape, "f", None)

    order = {spec.name: i for i, spec in enumerate(specs)}

    def produce(spec: TensorSpec) -> np.ndarray:
        # Random codes straight in the stored formats (what the values are does not change the
        # build's work): e4m3 bytes without the NaN codes, e2m1 nibble pairs, UE8M0 scales near 2^-8.
        state, shape, part, _ = source[spec.name]
        rng = np.random.default_rng([7, order[spec.name]])
        if part == "f":
            return _demo_tensor(state, shape, rng, config)
        if part == "s":
            return rng.integers(127 - 10, 127 - 6, spec.shape, dtype=np.uint8)
        if spec.dtype == "I8":
            return rng.integers(-128, 128, spec.shape, dtype=np.int8)
        codes = rng.integers(0, 256, spec.shape, dtype=np.uint8)
        codes[(codes & 0x7F) == 0x7F] = 0x38  # 0x7F / 0xFF are NaN in e4m3: make them 1.0
        return codes

    out.mkdir()
    write_file(out / "model.safetensors", specs, produce, metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(raw, indent=1))
    write_tokenizer(out / "tokenizer.json")
    return (out / "model.safetensors").stat().st_size


def _child_read(ckpt: str) -> dict[str, float]:
    from appliance.model.safetensors_io import SafetensorsFile

    start, total = time.perf_counter(), 0
    f = SafetensorsFile(Path(ckpt) / "model.safetensors")
    for name in f.names():
        total += f.read(name).nbytes
    return {"seconds": time.perf_counter() - start, "peak": _peak_rss(), "bytes": total}


def nodes_per_layer(bundle: Path) -> tuple[dict[str, list[int]], dict[str, int], int]:
    import onnx

    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    per: collections.Counter[int] = collections.Counter()
    hc: collections.Counter[int] = collections.Counter()
    for node in model.graph.node:
        m = re.match(r"/model/layers\.(\d+)/", node.name)
        if m:
            per[int(m.group(1))] += 1
            hc[int(m.group(1))] += "/sinkhorn/" in node.name
    kinds: dict[str, list[int]] = collections.defaultdict(list)
    hc_kinds: dict[str, int] = {}
    for layer in sorted(per):
        kinds[KINDS[layer % 3]].append(per[layer])
        hc_kinds[KINDS[layer % 3]] = hc[layer]
    return dict(kinds), hc_kinds, len(model.graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=129280)
    parser.add_argument("--quant", default="none,int8,int4")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import json

        print(json.dumps(_child_read(args.child[1])))
        return
    with tempfile.TemporaryDirectory(prefix="enclave-bench-release-") as tmp:
        ckpt = Path(tmp) / "ckpt"
        start = time.perf_counter()
        size = write_release_checkpoint(ckpt, flash_config(args.layers, args.experts, args.vocab))
        print(f"release-layout checkpoint: {args.layers} layers, {args.experts} experts, vocab {args.vocab}: "
              f"{size / MB:.0f} MB written in {time.perf_counter() - start:.0f} s")  # fmt: skip
        from appliance.model.checkpoint import open_checkpoint

        opened = open_checkpoint(ckpt)
        largest = max(opened.stored_bytes(n) for n in opened.names())
        peer = _run_read(ckpt)
        print(f"peer: read every tensor as stored: {size / MB / peer['seconds']:.0f} MB/s")
        print(
            f"{'quant':>5} {'seconds':>8} {'MB/s':>6} {'x peer':>6} {'peak RSS MB':>11} {'largest MB':>10} {'bundle MB':>9}"
        )
        for quant in args.quant.split(","):
            out = Path(tmp) / f"bundle-{quant}"
            built = _run_child("build", str(ckpt), str(out), quant)
            bundle_mb = sum(f.stat().st_size for f in out.iterdir()) / MB
            rate = size / MB / built["seconds"]
            print(f"{quant:>5} {built['seconds']:>8.1f} {rate:>6.1f} {rate / (size / MB / peer['seconds']):>6.3f} "
                  f"{built['peak'] / MB:>11.0f} {largest / MB:>10.0f} {bundle_mb:>9.0f}")  # fmt: skip
            if quant == args.quant.split(",")[0]:
                kinds, hc, total = nodes_per_layer(out)
                print(f"      nodes: {total} in the graph; per layer " + ", ".join(
                    f"{k}: {v[0]} ({hc[k]} Sinkhorn)" for k, v in kinds.items()))  # fmt: skip
            import shutil

            shutil.rmtree(out)


def _run_read(ckpt: Path) -> dict[str, float]:
    import json
    import subprocess

    done = subprocess.run(
        [sys.executable, __file__, "--child", "read", str(ckpt)], capture_output=True, text=True, check=True
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
