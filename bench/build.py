"""Benchmark ``enclave model build``: throughput and peak memory.

    .venv/bin/python bench/build.py [--layers 3] [--experts 8] [--vocab 129280] [--quant none,int8,int4]
    .venv/bin/python bench/build.py --scaling [--depths 4,16] [--widths 16,128] [--hidden 256] [--tokens 256]

By default (the issue's figure): writes a checkpoint the way DeepSeek's release stores V4-Flash —
dense projections FP8 e4m3 with a UE8M0 scale per 128x128 block, routed experts FP4 e2m1 (two per
int8) with a UE8M0 scale per 32 inputs, one file entry per expert and projection, embeddings / head /
router / norms in float32 — tensor by tensor, at V4-Flash's real per-tensor dimensions (hidden 4096,
64 heads x 512, ranks 1024, 8 output groups, indexer 64 x 128, experts x 2048; layers sliding + hash
MoE, CSA, HCA, repeated), then builds it once per ``--quant`` in a fresh subprocess and prints, per
build:

* throughput, MB of checkpoint per second (the goal: >= 200 MB/s), and the peer measured in the
  same run: reading every tensor of the checkpoint as stored (what any build must at least do), its
  MB/s and the ratio;
* peak resident memory of the build (VmHWM) against the checkpoint's largest tensor;
* the graph's nodes per layer (by layer kind), and how many of them are the hyper-connections'
  Sinkhorn normalizations.

With ``--scaling``: random V4 checkpoints of three sizes — the base, one deeper (same largest
tensor), one with more experts per layer (a layer's expert stack grows, as a real V4 layer's ~13 GB
does) — each built to a bundle in a fresh subprocess, fp32 and ``--quant int4``:

* build throughput, MB of checkpoint weights per second;
* peak memory of the build process above its own baseline after imports, two ways: resident
  (``VmHWM``) and heap (``tracemalloc``: what the builder itself allocated, numpy arrays included);
* for a peer measured in the same run — loading the whole checkpoint with
  ``safetensors.numpy.load_file``, what a non-streaming builder starts with — its speed and resident
  peak, and the ratio of peaks.

The claim it checks: the builder's memory follows the largest tensor, not the checkpoint nor a
layer — the peer's grows with the checkpoint, ours stays flat.

Then quantized bundles of the demo model: top-1 agreement and logit cosine of int8 / int4 bundles
against the fp32 bundle over teacher-forced decode steps, with an fp16 bundle as the peer measured
in the same run. The demo model's weights are random, so these figures show the bundle path works,
not the quantization's accuracy: issue 5's targets (int8 >= 99% top-1, int4 >= 95%) are measured on a
trained model by bench/graph_quality.py.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import psutil

MB = 1e6
KINDS = ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"]


def _config(layers: int, hidden: int, experts: int) -> dict[str, object]:
    from appliance.model.demo import RANDOM_CONFIG

    return {
        **RANDOM_CONFIG,
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
        "layer_types": [KINDS[i % 3] for i in range(layers)],
        "mlp_layer_types": ["hash_moe"] + ["moe"] * (layers - 1),
    }


def _peak_rss() -> int:
    """This process's peak resident bytes. /proc's VmHWM, not ru_maxrss: at exec Linux folds the
    forked copy of the parent into ru_maxrss, so a child of a parent that has just written a
    checkpoint would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child_build(ckpt: str, out: str, quant: str, trace: str = "") -> dict[str, float]:
    """One build; with ``trace``, under tracemalloc (its heap peak; the time is then not reported:
    tracing slows the allocation-heavy quantizer by half)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from appliance.model.bundle import build_bundle
    from appliance.model.graph import build_graphs  # noqa: F401 - imported before the baseline is taken

    baseline = psutil.Process().memory_info().rss
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    build_bundle(ckpt, out, quant=quant, signing_key=Ed25519PrivateKey.generate(), version=1)
    seconds = time.perf_counter() - start
    if trace:
        return {"heap": tracemalloc.get_traced_memory()[1]}
    return {"seconds": seconds, "peak": _peak_rss(), "baseline": baseline}


def _child_load(ckpt: str) -> dict[str, float]:
    from safetensors.numpy import load_file

    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    tensors = {}
    for shard in sorted(Path(ckpt).glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    seconds = time.perf_counter() - start
    peak = _peak_rss()
    return {"seconds": seconds, "peak": peak, "baseline": baseline, "tensors": len(tensors)}


def _run_child(*args: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{result.stderr}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


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
    parser.add_argument("--layers", type=int, default=3, help="release checkpoint: layers")
    parser.add_argument("--experts", type=int, default=8, help="release checkpoint: routed experts per layer")
    parser.add_argument("--vocab", type=int, default=129280, help="release checkpoint: vocabulary")
    parser.add_argument("--quant", default="none,int8,int4", help="release checkpoint: builds to time")
    parser.add_argument(
        "--scaling", action="store_true", help="the memory-scaling and quantization reports instead"
    )
    parser.add_argument("--depths", default="4,16", help="--scaling: depths of the two checkpoints")
    parser.add_argument("--hidden", type=int, default=256, help="--scaling: hidden size")
    parser.add_argument(
        "--widths", default="16,128", help="--scaling: experts per layer of the base and the wide checkpoint"
    )
    parser.add_argument(
        "--tokens", type=int, default=256, help="--scaling: decode steps for the quantization report"
    )
    parser.add_argument("--skip-memory", action="store_true", help="--scaling: only the quantization report")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        children = {"build": _child_build, "load": _child_load, "read": _child_read}
        print(json.dumps(children[kind](*rest)))
        return
    if not args.scaling:
        _release_report(args)
        return
    if not args.skip_memory:
        _memory_report(args)
    _quant_report(args.tokens)


def _release_report(args: argparse.Namespace) -> None:
    from appliance.model.checkpoint import open_checkpoint

    quants = args.quant.split(",")
    with tempfile.TemporaryDirectory(prefix="enclave-bench-release-") as tmp:
        ckpt = Path(tmp) / "ckpt"
        start = time.perf_counter()
        size = write_release_checkpoint(ckpt, flash_config(args.layers, args.experts, args.vocab))
        print(f"release-layout checkpoint: {args.layers} layers, {args.experts} experts, vocab {args.vocab}: "
              f"{size / MB:.0f} MB written in {time.perf_counter() - start:.0f} s")  # fmt: skip
        opened = open_checkpoint(ckpt)
        largest = max(opened.stored_bytes(n) for n in opened.names())
        parts: collections.Counter[str] = collections.Counter()
        for name in opened.names():
            per_value = opened.stored_bytes(name) / np.prod(opened.shape(name))
            parts["float" if per_value >= 2 else "FP8" if per_value >= 1 else "FP4"] += opened.stored_bytes(
                name
            )
        print("  of which " + ", ".join(f"{k} {v / MB:.0f} MB" for k, v in sorted(parts.items())))
        peer = _run_child("read", str(ckpt))
        peer_rate = size / MB / peer["seconds"]
        print(f"peer: read every tensor as stored: {peer_rate:.0f} MB/s")
        print(
            f"{'quant':>5} {'seconds':>8} {'MB/s':>6} {'x peer':>6} {'peak RSS MB':>11} {'largest MB':>10} {'bundle MB':>9}"
        )
        for quant in quants:
            out = Path(tmp) / f"bundle-{quant}"
            built = _run_child("build", str(ckpt), str(out), quant)
            bundle_mb = sum(f.stat().st_size for f in out.iterdir()) / MB
            rate = size / MB / built["seconds"]
            print(f"{quant:>5} {built['seconds']:>8.1f} {rate:>6.1f} {rate / peer_rate:>6.3f} "
                  f"{built['peak'] / MB:>11.0f} {largest / MB:>10.0f} {bundle_mb:>9.0f}")  # fmt: skip
            if quant == quants[0]:
                kinds, hc, total = nodes_per_layer(out)
                print(f"      nodes: {total} in the graph; per layer " + ", ".join(
                    f"{k}: {v[0]} ({hc[k]} Sinkhorn)" for k, v in kinds.items()))  # fmt: skip
            shutil.rmtree(out)


def _memory_report(args: argparse.Namespace) -> None:
    from appliance.model.checkpoint import open_checkpoint
    from appliance.model.demo import write_random_checkpoint

    depths = [int(x) for x in args.depths.split(",")]
    widths = [int(x) for x in args.widths.split(",")]
    shapes = [(depths[0], widths[0]), (depths[-1], widths[0]), (depths[0], widths[-1])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="enclave-bench-build-") as tmp:
        for layers, experts in shapes:
            ckpt = Path(tmp) / f"ckpt-{layers}-{experts}"
            write_random_checkpoint(ckpt, _config(layers, args.hidden, experts))
            opened = open_checkpoint(ckpt)
            size = opened.total_bytes
            largest = max(opened.stored_bytes(n) for n in opened.names())
            built = {}
            for quant in ("none", "int4"):
                out = Path(tmp) / f"bundle-{layers}-{experts}-{quant}"
                built[quant] = _run_child("build", str(ckpt), str(out), quant)
                shutil.rmtree(out)
                built[quant] |= _run_child("build", str(ckpt), str(out), quant, "trace")
                shutil.rmtree(out)
            rows.append((layers, experts, size, largest, built, _run_child("load", str(ckpt))))

    print(f"{'layers':>6} {'experts':>7} {'ckpt MB':>8} {'largest':>8} {'quant':>5} {'MB/s':>6} "
          f"{'+rss MB':>8} {'heap MB':>8} | {'peer MB/s':>9} {'+rss MB':>8} {'rss ours/peer':>13}")  # fmt: skip
    for layers, experts, size, largest, built, peer in rows:
        for quant, ours in built.items():
            print(
                f"{layers:>6} {experts:>7} {size / MB:>8.1f} {largest / MB:>8.1f} {quant:>5} "
                f"{size / MB / ours['seconds']:>6.1f} {(ours['peak'] - ours['baseline']) / MB:>8.1f} "
                f"{ours['heap'] / MB:>8.1f} | {size / MB / peer['seconds']:>9.1f} "
                f"{(peer['peak'] - peer['baseline']) / MB:>8.1f} {ours['peak'] / peer['peak']:>13.2f}"
            )

    def growth(row: tuple, key: str) -> float:  # type: ignore[type-arg]
        base = rows[0][4]["none"]
        return row[4]["none"][key] / max(base[key], 1)

    peer0 = rows[0][5]["peak"] - rows[0][5]["baseline"]
    for row, what in (
        (rows[1], f"{depths[0]} -> {depths[-1]} layers"),
        (rows[2], f"{widths[0]} -> {widths[-1]} experts"),
    ):
        ours_rss = (row[4]["none"]["peak"] - row[4]["none"]["baseline"]) / max(
            rows[0][4]["none"]["peak"] - rows[0][4]["none"]["baseline"], 1
        )
        print(
            f"checkpoint x{row[2] / rows[0][2]:.2f} ({what}, largest tensor x{row[3] / rows[0][3]:.2f}): "
            f"build heap x{growth(row, 'heap'):.2f}, resident x{ours_rss:.2f}; "
            f"peer resident x{(row[5]['peak'] - row[5]['baseline']) / max(peer0, 1):.2f}"
        )


def _teacher_forced_logits(bundle_dir: Path, ids: list[int]) -> np.ndarray:
    """Prefill one token, then decode the rest one at a time: logits predicting ids[1:] and beyond."""
    import onnxruntime as ort

    from appliance.model.graph import state_shape

    info = json.loads((bundle_dir / "bundle.json").read_text())
    io = info["io"]
    (stage,) = io["stages"]
    session = ort.InferenceSession(str(bundle_dir / stage["file"]), providers=["CPUExecutionProvider"])
    act = {"float32": np.float32, "float16": np.float16}[io["dtype"]]
    state = {
        e["input"]: np.zeros(state_shape(e, batch=1, max_context=len(ids) + 1), act) for e in io["state"]
    }
    outputs = [o["name"] for o in stage["outputs"]]
    rows = []
    for position, token in enumerate(ids):
        feeds = {
            "input_ids": np.array([[token]], np.int64),
            "positions": np.array([position], np.int64),
            **state,
        }
        values = dict(zip(outputs, session.run(outputs, feeds), strict=True))
        state = {"past." + k[len("present.") :]: v for k, v in values.items() if k.startswith("present.")}
        rows.append(np.asarray(values["logits"][0], np.float32))
    return np.stack(rows)


def _quant_report(tokens: int) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from appliance.model.bundle import build_bundle
    from appliance.model.demo import write_demo_checkpoint

    key = Ed25519PrivateKey.generate()
    ids = [0, *np.random.default_rng(7).integers(10, 500, size=tokens - 1).tolist()]
    with tempfile.TemporaryDirectory(prefix="enclave-bench-quant-") as tmp:
        ckpt = write_demo_checkpoint(Path(tmp) / "ckpt")
        int8_error = _int8_relative_error(ckpt)
        noisy = _perturbed_copy(ckpt, Path(tmp) / "noisy", int8_error)
        logits: dict[str, np.ndarray] = {}
        nodes: dict[str, int] = {}
        for label, dtype, quant in (("fp32", "fp32", "none"), ("fp16", "fp16", "none"), ("noise", "fp32", "none"),
                                    ("int8", "fp32", "int8"), ("int4", "fp32", "int4")):  # fmt: skip
            out = Path(tmp) / label
            source = noisy if label == "noise" else ckpt
            build_bundle(source, out, dtype=dtype, quant=quant, signing_key=key, version=1)
            logits[label] = _teacher_forced_logits(out, ids)
            text = (out / "model.onnx").read_bytes()
            nodes[label] = text.count(b"MatMulNBits") + text.count(b"QMoE")
    ref = logits["fp32"]
    print(f"\nquantized demo bundles vs fp32, {tokens} teacher-forced decode steps")
    print(
        f"{'bundle':>6} {'top-1 agree':>11} {'cos mean':>9} {'cos min':>8} {'disagree / fp16 peer':>21} {'quant ops':>9}"
    )
    peer_miss = max(float((logits["fp16"].argmax(-1) != ref.argmax(-1)).mean()), 1.0 / tokens)
    for label in ("fp16", "noise", "int8", "int4"):
        got = logits[label]
        agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
        cos = (got * ref).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(ref, axis=-1)
        print(
            f"{label:>6} {agree:>11.2%} {cos.mean():>9.5f} {cos.min():>8.5f} "
            f"{(1 - agree) / peer_miss:>21.2f} {nodes[label]:>9}"
        )
    print(
        f"noise = fp32 with every matrix multiplied by (1 + {int8_error:.2e} * N(0,1)), random error of the same"
    )
    print(
        "relative RMS as int8 block rounding: what this random-weight model loses to any perturbation that size"
    )
    print(
        "(its MoE-routing and indexer top-k margins are thin). The int8 >= 99% / int4 >= 95% top-1 targets are"
    )
    print("measured on a trained model: bench/graph_quality.py")


def _int8_relative_error(ckpt: Path) -> float:
    """RMS of int8 block rounding over the matrices, relative to their RMS (block 32, as the graphs use)."""
    from appliance.model.checkpoint import open_checkpoint
    from appliance.model.quant import dequantize, quantize_blocks

    opened = open_checkpoint(ckpt)
    err = ref = 0.0
    for name in opened.names():
        value = opened.tensor(name)
        if value.dtype == np.float32 and value.ndim >= 2:
            back = dequantize(quantize_blocks(value, bits=8, block_size=32))
            err += float(((back - value) ** 2).sum())
            ref += float((value**2).sum())
    return (err / ref) ** 0.5


def _perturbed_copy(ckpt: Path, out: Path, relative: float) -> Path:
    """The checkpoint with every matrix multiplied by (1 + relative * N(0, 1)), elementwise."""
    from appliance.model.checkpoint import open_checkpoint
    from appliance.model.safetensors_io import save_file

    opened = open_checkpoint(ckpt)
    rng = np.random.default_rng(11)
    tensors = {}
    for name in opened.names():
        value = opened.tensor(name)
        if value.dtype == np.float32 and value.ndim >= 2:
            value = (value * (1 + relative * rng.standard_normal(value.shape))).astype(np.float32)
        tensors[name] = value
    out.mkdir()
    save_file(out / "model.safetensors", tensors)
    for extra in ("config.json", "tokenizer.json"):
        (out / extra).write_bytes((ckpt / extra).read_bytes())
    return out


if __name__ == "__main__":
    main()
