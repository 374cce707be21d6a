"""No CPU fallback on CUDA: every node of the graphs a CUDA bundle holds (fp16 / bf16 activations,
every --quant and MoE path, every layer type) has a kernel in ONNX Runtime's CUDA execution provider
for its domain, opset and input element types.

Checked without a GPU, against the CUDA provider's published kernel table (data/cuda_kernels.json,
trimmed from onnxruntime's docs/OperatorKernels.md): a node the table lacks would run on the CPU
inside a decode step — a copy each way per step, and no CUDA graph capture. fp32 bundles are for
CPU: the CUDA QMoE kernel has no float32 variant.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from appliance.model.graph import build_graphs
from tests.helpers.v4_reference import StateDictCheckpoint, reference_model, tiny_config

TABLE: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "cuda_kernels.json").read_text())
_TYPE_NAMES = {
    TensorProto.FLOAT: "float", TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16",
    TensorProto.DOUBLE: "double", TensorProto.INT64: "int64", TensorProto.INT32: "int32",
    TensorProto.INT8: "int8", TensorProto.UINT8: "uint8", TensorProto.BOOL: "bool",
}  # fmt: skip


def element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Every value's element type. onnx's shape inference does not know com.microsoft's ops, so their
    outputs (the type of their first input, for the ops used here) are declared and inference rerun
    until nothing is left untyped."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    while True:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        g = inferred.graph
        types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
        types.update({i.name: i.data_type for i in g.initializer})
        added = [
            helper.make_tensor_value_info(out, types[n.input[0]], None)
            for n in g.node
            if n.domain == "com.microsoft" and types.get(n.input[0])
            for out in n.output
            if not types.get(out)
        ]
        if not added:
            return types
        model.graph.value_info.extend(added)


def unsupported(model: onnx.ModelProto) -> list[str]:
    """The nodes with no CUDA kernel, each with the reason."""
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    types = element_types(model)
    problems = []
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        entry = TABLE.get(domain, {}).get(node.op_type)
        where = f"{node.name} ({domain}.{node.op_type})"
        if entry is None:
            problems.append(f"{where}: no CUDA kernel")
            continue
        version = opsets[domain]
        if version < entry["since"] or (entry["until"] is not None and version > entry["until"]):
            problems.append(f"{where}: no CUDA kernel at opset {version}")
            continue
        for position, name in enumerate(node.input):
            if not name:
                continue  # an omitted optional input
            var = entry["inputs"][0] if entry["inputs"][0].endswith("...") else entry["inputs"][position]
            elem = types.get(name, 0)
            assert elem, f"{where}: input {name} has no inferred type"
            if _TYPE_NAMES.get(elem, str(elem)) not in entry["types"][var.rstrip(".")]:
                problems.append(f"{where}: input {position} is {_TYPE_NAMES.get(elem, elem)}, not in {var}")
                break  # one reason per node
    return problems


@pytest.fixture(scope="module")
def ckpt() -> StateDictCheckpoint:
    # Every layer type (sliding, CSA, HCA) and MLP type (hash MoE, MoE) of V4.
    return StateDictCheckpoint(reference_model(tiny_config(), seed=3))


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize(
    ("quant", "moe"), [("none", "portable"), ("none", "ort"), ("int8", "portable"), ("int4", "portable")]
)
def test_every_node_has_a_cuda_kernel(ckpt: StateDictCheckpoint, dtype: str, quant: str, moe: str) -> None:
    graphs = build_graphs(ckpt, dtype=dtype, quant=quant, moe=moe, stages=2)
    ops = Counter(n.op_type for g in graphs for n in g.graph.node)
    assert ops["MatMulNBits" if quant != "none" else "MatMul"] and ops["RMSNormalization"]
    assert [p for g in graphs for p in unsupported(g)] == []


def test_the_check_finds_a_cpu_only_node(ckpt: StateDictCheckpoint) -> None:
    """What a fallback looks like to the check: CUDA's Clip has no bf16 kernel, its TopK no bf16."""
    graph = build_graphs(ckpt, dtype="bf16")[0]
    x = graph.graph.input[0].name
    node = helper.make_node("Cast", [x], ["/t/bf16"], name="/t/Cast", to=TensorProto.BFLOAT16)
    clip = helper.make_node("Clip", ["/t/bf16"], ["/t/clipped"], name="/t/Clip")
    graph.graph.node.extend([node, clip])
    assert unsupported(graph) == ["/t/Clip (ai.onnx.Clip): input 0 is bfloat16, not in T"]
