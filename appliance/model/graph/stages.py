"""Pipeline stages: which layers each graph owns, the graphs themselves, and their I/O description."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx

from appliance.model.config import CSA, SLIDING, V4Config
from appliance.model.graph.builder import ACT_DTYPES, MATMUL_ACCURACY, QUANT_BITS, Checkpoint, WeightSink
from appliance.model.graph.model import LOGITS_MODES, V4GraphBuilder
from appliance.model.graph.moe import MOE_PATHS
from shared.errors import ModelError

__all__ = ["build_graphs", "graph_io", "stage_files", "stage_layers", "state_shape"]

_DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}

# config.json model_type -> graph builder. One architecture today; a successor overrides only what
# differs in a subclass and registers it here.
BUILDERS: dict[str, type[V4GraphBuilder]] = {"deepseek_v4": V4GraphBuilder}


def stage_layers(n_layers: int, stages: int) -> list[tuple[int, int]]:
    """Split ``n_layers`` into ``stages`` contiguous ranges, as even as possible (earlier ones larger)."""
    if stages < 1 or stages > n_layers:
        raise ModelError(f"stages must be between 1 and the number of layers ({n_layers}); got {stages}")
    base, extra = divmod(n_layers, stages)
    bounds, start = [], 0
    for k in range(stages):
        end = start + base + (1 if k < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def stage_files(stages: int) -> list[str]:
    return ["model.onnx"] if stages == 1 else [f"stage{k}.onnx" for k in range(stages)]


def build_graphs(
    ckpt: Checkpoint,
    *,
    dtype: str = "fp32",
    quant: str = "none",
    stages: int = 1,
    moe: str = "ort",
    logits: str = "last",
    weight_sink: WeightSink | Sequence[WeightSink] | None = None,
    accuracy_level: int = MATMUL_ACCURACY,
) -> list[onnx.ModelProto]:
    """One ONNX graph per pipeline stage, computing what transformers' DeepseekV4ForCausalLM computes.

    ``weight_sink`` receives every weight as it is made (see builder.WeightSink): a writer that puts
    the bytes in external data at once keeps the build's memory near one layer's weights. Given one
    sink per stage, stage ``k``'s weights go to ``weight_sink[k]``. ``accuracy_level`` goes on every
    MatMulNBits (see builder.MATMUL_ACCURACY; 0: unset, the CPU kernel computes in fp32).
    """
    _check_choice("dtype", dtype, tuple(ACT_DTYPES))
    _check_choice("quant", quant, tuple(QUANT_BITS))
    _check_choice("moe", moe, MOE_PATHS)
    _check_choice("logits", logits, LOGITS_MODES)
    bounds = stage_layers(ckpt.config.num_hidden_layers, stages)
    sinks = list(weight_sink) if isinstance(weight_sink, Sequence) else [weight_sink] * len(bounds)
    if len(sinks) != len(bounds):
        raise ModelError(f"{len(sinks)} weight sinks for {len(bounds)} stages")
    graphs = []
    for k, layers in enumerate(bounds):
        builder = BUILDERS["deepseek_v4"](
            ckpt,
            layers=layers,
            dtype=dtype,
            quant=quant,
            moe=moe,
            logits=logits,
            weight_sink=sinks[k],
            accuracy_level=accuracy_level,
        )
        graphs.append(builder.build(f"deepseek_v4_stage{k}"))
    return graphs


def _check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ModelError(f"unsupported {key} {value!r} (choose from {', '.join(allowed)})")


def _state_entries(config: V4Config, layer: int, act: str) -> list[dict[str, Any]]:
    d, w = config.head_dim, config.sliding_window
    kind = config.layer_types[layer]
    shapes: list[tuple[str, list[Any]]] = [("window", ["batch", w, d])]
    if kind != SLIDING:
        m = config.compress_rate(layer)
        overlap = kind == CSA
        ring, feat = (2 * m, 4 * d) if overlap else (m, 2 * d)
        shapes += [("cmp_src", ["batch", ring, feat]), ("cmp_kv", ["batch", {"capacity": m}, d])]
        if overlap:
            di = config.index_head_dim
            shapes += [("idx_src", ["batch", 2 * m, 4 * di]), ("idx_kv", ["batch", {"capacity": m}, di])]
    return [
        {"layer": layer, "name": name, "input": f"past.{layer}.{name}", "output": f"present.{layer}.{name}",
         "dtype": act, "shape": shape}
        for name, shape in shapes
    ]  # fmt: skip


def graph_io(
    config: V4Config, *, dtype: str = "fp32", stages: int = 1, logits: str = "last"
) -> dict[str, Any]:
    """The ``io`` object of bundle.json: per-stage inputs/outputs and the cache state (docs/bundle.md)."""
    _check_choice("dtype", dtype, tuple(ACT_DTYPES))
    _check_choice("logits", logits, LOGITS_MODES)
    act = _DTYPE_NAMES[dtype]
    hc, dim = config.hc_mult, config.hidden_size
    state = [e for layer in range(config.num_hidden_layers) for e in _state_entries(config, layer, act)]
    out_stages = []
    bounds = stage_layers(config.num_hidden_layers, stages)
    for k, (first, last) in enumerate(bounds):
        owned = [e for e in state if first <= e["layer"] < last]
        inputs: list[dict[str, Any]] = [
            {"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]},
            {"name": "positions", "dtype": "int64", "shape": ["batch"]},
        ]
        if first > 0:
            inputs.append({"name": "hidden_streams_in", "dtype": act, "shape": ["batch", "seq", hc, dim]})
        inputs += [{"name": e["input"], "dtype": act, "shape": e["shape"]} for e in owned]
        if last == config.num_hidden_layers:
            shape: list[Any] = (
                ["batch", config.vocab_size] if logits == "last" else ["batch", "seq", config.vocab_size]
            )
            outputs: list[dict[str, Any]] = [{"name": "logits", "dtype": "float32", "shape": shape}]
        else:
            outputs = [{"name": "hidden_streams", "dtype": act, "shape": ["batch", "seq", hc, dim]}]
        outputs += [{"name": e["output"], "dtype": act, "shape": e["shape"]} for e in owned]
        out_stages.append(
            {"file": stage_files(stages)[k], "layers": [first, last], "inputs": inputs, "outputs": outputs}
        )
    return {"dtype": act, "logits": logits, "stages": out_stages, "state": state}


def state_shape(entry: dict[str, Any], *, batch: int, max_context: int) -> tuple[int, ...]:
    """Resolve a state entry's shape (``"batch"``, ``{"capacity": m}``) for a runner's buffers."""
    dims: list[int] = []
    for dim in entry["shape"]:
        if dim == "batch":
            dims.append(batch)
        elif isinstance(dim, dict):
            dims.append(max_context // int(dim["capacity"]) + 1)
        else:
            dims.append(int(dim))
    return tuple(dims)
