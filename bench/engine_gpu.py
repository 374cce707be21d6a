"""One decode step of a V4-Flash slice at real dimensions: ONNX Runtime against torch, same weights.

    python bench/engine_gpu.py --out DIR                  # CUDA, real sizes (the H200)
    python bench/engine_gpu.py --device cpu --tiny --out DIR   # shrunken, to know it runs anywhere

The slice is what dominates V4-Flash decode: per layer, the attention projections (q_a 4096->1024,
q_b 1024->64x512, kv 4096->512, grouped o_a 8x(4096->1024), o_b 8192->4096), the router, the shared
expert and 256 routed SwiGLU experts of width 2048 with top-6 routing, run by ONNX Runtime's fused
``com.microsoft.MoE`` (the graph builder's ``moe="ort"`` path, same attributes and weight layout).
Random weights (no checkpoint, no attention core: only weight traffic matters here). The graph is
written here rather than by appliance.model.graph because the builder takes weights as numpy
initializers: at these sizes that is 13 GB of experts per layer to generate on the host and write
to disk before ONNX Runtime could start, against seconds for torch to fill them on the device. Weights are allocated once by torch on the
device and bound to ONNX Runtime zero-copy with IO binding, so both sides read the very same bytes.

Reported per batch size (1, 8, 64 tokens in the step): time per step for ORT and for torch (an
eager torch implementation that loops over the experts the batch touches), the weight bytes the
step must read (all dense weights + the touched experts), the achieved bandwidth of each against the
HBM peak, the ORT/torch speed ratio, and the largest difference between the two outputs.
Writes ``results.json`` and ``results.md`` into --out. Self-contained: numpy, onnx, onnxruntime,
torch (on the GPU host: PYTHONPATH=/root/site, and onnxruntime.preload_dlls() is called here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

HBM_PEAK_TBPS = 4.8


@dataclass(frozen=True)
class Dims:
    hidden: int = 4096
    heads: int = 64
    head_dim: int = 512
    q_lora: int = 1024
    o_groups: int = 8
    o_lora: int = 1024
    kv_dim: int = 512
    experts: int = 256
    top_k: int = 6
    expert_width: int = 2048
    layers: int = 4
    swiglu_limit: float = 10.0


TINY = Dims(
    hidden=256, heads=8, head_dim=64, q_lora=128, o_groups=4, o_lora=128, kv_dim=64,
    experts=32, top_k=6, expert_width=128, layers=2,
)  # fmt: skip


def weight_shapes(d: Dims) -> dict[str, tuple[int, ...]]:
    """Per-layer weights, MatMul layout [in, out]; experts in com.microsoft.MoE's [E, out, in]."""
    per_group_in = d.heads * d.head_dim // d.o_groups
    return {
        "wq_a": (d.hidden, d.q_lora),
        "wq_b": (d.q_lora, d.heads * d.head_dim),
        "wkv": (d.hidden, d.kv_dim),
        "wo_a": (d.o_groups, per_group_in, d.o_lora),
        "wo_b": (d.o_groups * d.o_lora, d.hidden),
        "w_router": (d.hidden, d.experts),
        "ws_13": (d.hidden, 2 * d.expert_width),
        "ws_2": (d.expert_width, d.hidden),
        "we_13": (d.experts, 2 * d.expert_width, d.hidden),  # gate/up rows interleaved
        "we_2": (d.experts, d.hidden, d.expert_width),
    }


def build_graph(d: Dims, elem: int) -> onnx.ModelProto:
    """x -> layers x [attention projections -> +residual -> router, MoE, shared expert -> +residual]."""
    shapes = weight_shapes(d)
    inputs = [helper.make_tensor_value_info("x", elem, ["batch", d.hidden])]
    nodes: list[onnx.NodeProto] = []
    inits = [
        helper.make_tensor("o_split", TensorProto.INT64, [3], [0, d.o_groups, -1]),
        helper.make_tensor("o_merge", TensorProto.INT64, [2], [0, -1]),
        helper.make_tensor("limit", elem, [], [d.swiglu_limit]),
        helper.make_tensor("neg_limit", elem, [], [-d.swiglu_limit]),
    ]
    outputs = []
    x = "x"
    for layer in range(d.layers):
        p = f"l{layer}."
        for name, shape in shapes.items():
            inputs.append(helper.make_tensor_value_info(p + name, elem, list(shape)))

        def mm(a: str, w: str, out: str) -> str:
            nodes.append(helper.make_node("MatMul", [a, p + w], [p + out]))  # noqa: B023
            return p + out  # noqa: B023

        q = mm(mm(x, "wq_a", "qa"), "wq_b", "q")
        kv = mm(x, "wkv", "kv")
        # The attention core is left out (no weights); its output has q's shape, so o_* read q.
        nodes.append(helper.make_node("Reshape", [q, "o_split"], [p + "q_groups"]))
        nodes.append(helper.make_node("Transpose", [p + "q_groups"], [p + "q_gt"], perm=[1, 0, 2]))
        nodes.append(helper.make_node("MatMul", [p + "q_gt", p + "wo_a"], [p + "oa_g"]))
        nodes.append(helper.make_node("Transpose", [p + "oa_g"], [p + "oa_t"], perm=[1, 0, 2]))
        nodes.append(helper.make_node("Reshape", [p + "oa_t", "o_merge"], [p + "oa"]))
        o = mm(p + "oa", "wo_b", "o")
        nodes.append(helper.make_node("Add", [x, o], [p + "h"]))
        h = p + "h"
        router = mm(h, "w_router", "router")
        nodes.append(
            helper.make_node(
                "MoE", [h, router, p + "we_13", "", p + "we_2"], [p + "moe"], domain="com.microsoft",
                k=d.top_k, activation_type="swiglu", swiglu_fusion=1, swiglu_limit=d.swiglu_limit,
                activation_alpha=1.0, activation_beta=0.0, normalize_routing_weights=1,
            )
        )  # fmt: skip
        s = mm(h, "ws_13", "s13")
        nodes += [
            helper.make_node("Split", [s], [p + "sg", p + "su"], axis=-1, num_outputs=2),
            helper.make_node("Clip", [p + "sg", "", "limit"], [p + "sgc"]),
            helper.make_node("Clip", [p + "su", "neg_limit", "limit"], [p + "suc"]),
            helper.make_node("Sigmoid", [p + "sgc"], [p + "sig"]),
            helper.make_node("Mul", [p + "sgc", p + "sig"], [p + "silu"]),
            helper.make_node("Mul", [p + "silu", p + "suc"], [p + "sact"]),
        ]
        shared = mm(p + "sact", "ws_2", "shared")
        nodes += [
            helper.make_node("Add", [h, p + "moe"], [p + "h2"]),
            helper.make_node("Add", [p + "h2", shared], [p + "out"]),
        ]
        # kv feeds the attention core, which is not in the slice: output it so it is not pruned.
        outputs.append(helper.make_tensor_value_info(kv, elem, ["batch", d.kv_dim]))
        x = p + "out"
    outputs.insert(0, helper.make_tensor_value_info(x, elem, ["batch", d.hidden]))
    graph = helper.make_graph(nodes, "v4_flash_slice", inputs, outputs, inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 9
    return model


# ---- torch, the peer ------------------------------------------------------------------------------


def torch_step(d: Dims, weights: list[dict[str, torch.Tensor]], x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The same slice in eager torch; returns the output and how many experts the step touched."""
    touched = 0
    for w in weights:
        q = (x @ w["wq_a"]) @ w["wq_b"]
        _kv = x @ w["wkv"]
        groups = q.view(q.shape[0], d.o_groups, -1).transpose(0, 1)
        oa = torch.bmm(groups, w["wo_a"]).transpose(0, 1).reshape(q.shape[0], -1)
        h = x + oa @ w["wo_b"]
        probs = torch.softmax((h @ w["w_router"]).float(), dim=-1)
        top_w, top_i = probs.topk(d.top_k, dim=-1)
        top_w = (top_w / top_w.sum(-1, keepdim=True)).to(h.dtype)
        moe = torch.zeros_like(h)
        experts = torch.unique(top_i).tolist()
        touched += len(experts)
        for e in experts:
            rows, slot = torch.nonzero(top_i == e, as_tuple=True)
            g_u = h[rows] @ w["we_13"][e].T
            act = _swiglu(g_u[:, 0::2], g_u[:, 1::2], d.swiglu_limit)
            moe.index_add_(0, rows, (act @ w["we_2"][e].T) * top_w[rows, slot, None])
        s = h @ w["ws_13"]
        shared = _swiglu(s[:, : d.expert_width], s[:, d.expert_width :], d.swiglu_limit) @ w["ws_2"]
        x = h + moe + shared
    return x, touched


def _swiglu(gate: torch.Tensor, up: torch.Tensor, limit: float) -> torch.Tensor:
    gate = gate.clamp(max=limit)
    return gate * torch.sigmoid(gate) * up.clamp(-limit, limit)


# ---- measurement ----------------------------------------------------------------------------------


@dataclass
class Row:
    batch: int
    experts_touched: int
    weight_bytes: int
    ort_us: float | None
    torch_us: float
    ort_tbps: float | None
    torch_tbps: float
    ort_over_torch_speed: float | None
    max_abs_diff: float | None
    ort_error: str | None = None
    # The same graph in a session with CUDA-graph capture (static shapes, fixed addresses).
    graph_us: float | None = None
    graph_tbps: float | None = None
    graph_error: str | None = None


def timed(fn: Callable[[], Any], sync: Callable[[], None], iters: int) -> float:
    for _ in range(3):
        fn()
    sync()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="shrunken dimensions (CPU smoke run)")
    parser.add_argument("--layers", type=int, help="override the number of layers")
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--no-cuda-graph", action="store_true", help="skip the CUDA-graph variant")
    args = parser.parse_args()

    import onnxruntime as ort

    dims = TINY if args.tiny else Dims()
    if args.layers:
        dims = Dims(**{**asdict(dims), "layers": args.layers})
    cuda = args.device == "cuda"
    if cuda:
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # the CUDA libraries torch brings, before the first session
        if not torch.cuda.is_available():
            parser.error("--device cuda but torch sees no GPU")
    dtype = torch.float16 if cuda else torch.float32
    elem = TensorProto.FLOAT16 if cuda else TensorProto.FLOAT
    device = torch.device("cuda:0" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    shapes = weight_shapes(dims)
    weights = []
    with torch.no_grad():
        for _ in range(dims.layers):
            layer = {}
            for name, shape in shapes.items():
                fan_in = shape[-1] if name.startswith("we_") else shape[-2]
                layer[name] = (torch.randn(shape, device=device, dtype=torch.float32) * fan_in**-0.5).to(
                    dtype
                )
            weights.append(layer)
    sync()
    dense_bytes = sum(t.nbytes for w in weights for n, t in w.items() if not n.startswith("we_"))
    expert_bytes = sum(t.nbytes for t in (weights[0]["we_13"][0], weights[0]["we_2"][0]))
    setup_s = time.perf_counter() - t0

    model_bytes = build_graph(dims, elem).SerializeToString()

    def open_session(cuda_graph: bool) -> Any:
        providers: list[Any] = ["CPUExecutionProvider"]
        if cuda:
            cuda_options = {"device_id": 0, **({"enable_cuda_graph": "1"} if cuda_graph else {})}
            providers.insert(0, ("CUDAExecutionProvider", cuda_options))
        return ort.InferenceSession(model_bytes, ort.SessionOptions(), providers=providers)

    session = open_session(False)
    dev_kind, dev_id = ("cuda", 0) if cuda else ("cpu", 0)
    np_elem = np.float16 if cuda else np.float32
    out_names = [o.name for o in session.get_outputs()]

    def bind(sess: Any, x: torch.Tensor, outs: list[torch.Tensor]) -> Any:
        """Everything by address: the weights torch allocated, x, and preallocated outputs."""
        binding = sess.io_binding()
        binding.bind_input("x", dev_kind, dev_id, np_elem, tuple(x.shape), x.data_ptr())
        for layer, w in enumerate(weights):
            for name, t in w.items():
                binding.bind_input(
                    f"l{layer}.{name}", dev_kind, dev_id, np_elem, tuple(t.shape), t.data_ptr()
                )
        for name, t in zip(out_names, outs, strict=True):
            binding.bind_output(name, dev_kind, dev_id, np_elem, tuple(t.shape), t.data_ptr())
        return binding

    rows: list[Row] = []
    for batch in [int(b) for b in args.batches.split(",")]:
        x = (torch.randn(batch, dims.hidden, device=device) * 0.5).to(dtype)
        with torch.no_grad():
            ref, touched = torch_step(dims, weights, x)
            torch_us = timed(lambda: torch_step(dims, weights, x), sync, args.iters)  # noqa: B023
        weight_bytes = dense_bytes + touched * expert_bytes
        ort_us = diff = None
        error = None
        outs = [torch.empty(batch, dims.hidden, device=device, dtype=dtype)]
        outs += [torch.empty(batch, dims.kv_dim, device=device, dtype=dtype) for _ in range(dims.layers)]
        try:
            binding = bind(session, x, outs)
            session.run_with_iobinding(binding)
            sync()
            diff = float((outs[0].float() - ref.float()).abs().max())
            ort_us = timed(lambda: session.run_with_iobinding(binding), sync, args.iters)  # noqa: B023
        except Exception as exc:  # a bench reports what failed and carries on with the peer's figure
            error = f"{type(exc).__name__}: {exc}"[:500]
        graph_us = graph_error = None
        if cuda and not args.no_cuda_graph:
            try:
                graph_session = open_session(True)
                graph_binding = bind(graph_session, x, outs)
                graph_session.run_with_iobinding(graph_binding)  # captures the graph
                graph_us = timed(lambda: graph_session.run_with_iobinding(graph_binding), sync, args.iters)  # noqa: B023
                del graph_session
            except Exception as exc:
                graph_error = f"{type(exc).__name__}: {exc}"[:500]
        rows.append(
            Row(
                batch=batch,
                experts_touched=touched,
                weight_bytes=weight_bytes,
                ort_us=ort_us,
                torch_us=torch_us,
                ort_tbps=None if ort_us is None else weight_bytes / ort_us / 1e6,
                torch_tbps=weight_bytes / torch_us / 1e6,
                ort_over_torch_speed=None if ort_us is None else torch_us / ort_us,
                max_abs_diff=diff,
                ort_error=error,
                graph_us=graph_us,
                graph_tbps=None if graph_us is None else weight_bytes / graph_us / 1e6,
                graph_error=graph_error,
            )
        )
        print(_line(rows[-1]), flush=True)

    result = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "dtype": str(dtype),
        "dims": asdict(dims),
        "dense_weight_bytes": dense_bytes,
        "bytes_per_expert": expert_bytes,
        "hbm_peak_tbps": HBM_PEAK_TBPS,
        "weight_setup_s": setup_s,
        "rows": [asdict(r) for r in rows],
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (args.out / "results.md").write_text(_markdown(result, rows), encoding="utf-8")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 0


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _line(r: Row) -> str:
    return (
        f"batch {r.batch:>3}: experts {r.experts_touched:>4}  bytes {r.weight_bytes / 1e9:7.3f} GB  "
        f"ORT {_fmt(r.ort_us, '9.1f')} us {_fmt(r.ort_tbps, '6.3f')} TB/s  "
        f"torch {r.torch_us:9.1f} us {r.torch_tbps:6.3f} TB/s  "
        f"ORT/torch speed {_fmt(r.ort_over_torch_speed, '5.2f')}x  max|diff| {_fmt(r.max_abs_diff, '.3g')}  "
        f"ORT+CUDA graph {_fmt(r.graph_us, '.1f')} us {_fmt(r.graph_tbps, '.3f')} TB/s"
        + (f"  ORT error: {r.ort_error}" if r.ort_error else "")
        + (f"  CUDA graph error: {r.graph_error}" if r.graph_error else "")
    )


def _markdown(result: dict[str, Any], rows: list[Row]) -> str:
    d = result["dims"]
    lines = [
        f"# V4-Flash slice decode step: ONNX Runtime vs torch on {result['device']}",
        "",
        f"{d['layers']} layers, hidden {d['hidden']}, {d['experts']} experts top-{d['top_k']}, expert width "
        f"{d['expert_width']}, {result['dtype']}; onnxruntime {result['onnxruntime']}, torch {result['torch']}. "
        f"Bandwidth = weight bytes the step must read / time; HBM peak {HBM_PEAK_TBPS} TB/s.",
        "",
        "| batch | experts touched | weight GB | ORT us | ORT TB/s (% peak) | ORT+CUDA graph us (TB/s) "
        "| torch us | torch TB/s | ORT/torch speed | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = "" if r.ort_tbps is None else f" ({100 * r.ort_tbps / HBM_PEAK_TBPS:.0f}%)"
        lines.append(
            f"| {r.batch} | {r.experts_touched} | {r.weight_bytes / 1e9:.3f} | {_fmt(r.ort_us, '.1f')} | "
            f"{_fmt(r.ort_tbps, '.3f')}{peak} | {_fmt(r.graph_us, '.1f')} ({_fmt(r.graph_tbps, '.3f')}) | "
            f"{r.torch_us:.1f} | {r.torch_tbps:.3f} | "
            f"{_fmt(r.ort_over_torch_speed, '.2f')}x | {_fmt(r.max_abs_diff, '.3g')} |"
        )
    errors = [f"- batch {r.batch}: {r.ort_error}" for r in rows if r.ort_error]
    errors += [f"- batch {r.batch} (CUDA graph): {r.graph_error}" for r in rows if r.graph_error]
    if errors:
        lines += ["", "ORT errors:", *errors]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
