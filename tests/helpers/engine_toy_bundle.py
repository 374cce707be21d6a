"""A tiny model bundle that follows the graph contract of docs/bundle.md, for runner tests.

It exercises exactly what the runner owns — per-layer state in and out, positions, slots, stages,
``hidden_streams`` between stages — with arithmetic simple enough to recompute in numpy:

    h      = E[input_ids]                         (stage 0)   or hidden_streams_in (later stages)
    per layer l:  acc_l' = 0.5 * acc_l + sum_t h[:, t] + positions * u_l ;  h = h + tanh(acc_l')
    logits = h[:, -1] @ W_out                     (last stage)

The real DeepSeek V4 graphs are tested end to end elsewhere; this one only makes runner bugs (a
wrong row, a stale ping-pong buffer, a wrong position) show up as wrong logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.helpers.engine_tokenizer import build_hf_tokenizer

HIDDEN = 16


def _weights(vocab: int, layers: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    embed = rng.standard_normal((vocab, HIDDEN)).astype(np.float32)
    out = rng.standard_normal((HIDDEN, vocab)).astype(np.float32)
    us = [rng.standard_normal(HIDDEN).astype(np.float32) * 0.1 for _ in range(layers)]
    return embed, out, us


def _stage_graph(first: int, last: int, layers: int, vocab: int, seed: int) -> onnx.ModelProto:
    embed, w_out, us = _weights(vocab, layers, seed)
    is_first, is_last = first == 0, last == layers
    inits = [numpy_helper.from_array(np.array([1], dtype=np.int64), "one_axis")]
    inits.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "two_axis"))
    inits.append(numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"))
    nodes = []
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("positions", TensorProto.INT64, ["batch"]),
    ]
    outputs = []
    if is_first:
        inits.append(numpy_helper.from_array(embed, "embed"))
        nodes.append(helper.make_node("Gather", ["embed", "input_ids"], ["h_in"]))
    else:
        inputs.append(
            helper.make_tensor_value_info("hidden_streams_in", TensorProto.FLOAT, ["batch", "seq", 1, HIDDEN])
        )
        nodes.append(helper.make_node("Squeeze", ["hidden_streams_in", "two_axis"], ["h_in"]))
    nodes.append(helper.make_node("Cast", ["positions"], ["pos_f"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Unsqueeze", ["pos_f", "one_axis"], ["pos_col"]))
    h = "h_in"
    for layer in range(first, last):
        p = f"l{layer}_"
        inits.append(numpy_helper.from_array(us[layer], p + "u"))
        inputs.append(
            helper.make_tensor_value_info(f"past.{layer}.acc", TensorProto.FLOAT, ["batch", HIDDEN])
        )
        outputs.append(
            helper.make_tensor_value_info(f"present.{layer}.acc", TensorProto.FLOAT, ["batch", HIDDEN])
        )
        nodes += [
            helper.make_node("Mul", [f"past.{layer}.acc", "half"], [p + "decay"]),
            helper.make_node("ReduceSum", [h, "one_axis"], [p + "sum"], keepdims=0),
            helper.make_node("Mul", ["pos_col", p + "u"], [p + "posu"]),
            helper.make_node("Add", [p + "decay", p + "sum"], [p + "a"]),
            helper.make_node("Add", [p + "a", p + "posu"], [f"present.{layer}.acc"]),
            helper.make_node("Tanh", [f"present.{layer}.acc"], [p + "t"]),
            helper.make_node("Unsqueeze", [p + "t", "one_axis"], [p + "t3"]),
            helper.make_node("Add", [h, p + "t3"], [p + "h"]),
        ]
        h = p + "h"
    if is_last:
        inits.append(numpy_helper.from_array(w_out, "w_out"))
        inits.append(numpy_helper.from_array(np.array(-1, dtype=np.int64), "last_index"))
        nodes.append(helper.make_node("Gather", [h, "last_index"], ["h_last"], axis=1))
        nodes.append(helper.make_node("MatMul", ["h_last", "w_out"], ["logits"]))
        outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", vocab]))
    else:
        nodes.append(helper.make_node("Unsqueeze", [h, "two_axis"], ["hidden_streams"]))
        outputs.insert(
            0,
            helper.make_tensor_value_info("hidden_streams", TensorProto.FLOAT, ["batch", "seq", 1, HIDDEN]),
        )
    graph = helper.make_graph(nodes, f"toy_{first}_{last}", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_toy_bundle(directory: Path, *, stages: int = 1, layers: int = 2, seed: int = 0) -> Path:
    """A bundle directory: bundle.json (with ``io``), one graph per stage, tokenizer.json."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_hf_tokenizer()
    tokenizer.save(str(directory / "tokenizer.json"))
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    bounds = np.linspace(0, layers, stages + 1).round().astype(int).tolist()
    io_stages = []
    for k in range(stages):
        first, last = bounds[k], bounds[k + 1]
        name = "model.onnx" if stages == 1 else f"stage{k}.onnx"
        model = _stage_graph(first, last, layers, vocab, seed)
        onnx.save(model, str(directory / name))
        io_stages.append(
            {
                "file": name,
                "layers": [first, last],
                "inputs": [
                    {"name": i.name, "dtype": "float32", "shape": _dims(i)} for i in model.graph.input
                ],
                "outputs": [
                    {"name": o.name, "dtype": "float32", "shape": _dims(o)} for o in model.graph.output
                ],
            }
        )
    state = [
        {
            "layer": layer,
            "name": "acc",
            "input": f"past.{layer}.acc",
            "output": f"present.{layer}.acc",
            "dtype": "float32",
            "shape": ["batch", HIDDEN],
        }
        for layer in range(layers)
    ]
    document = {
        "format": "toy",
        "model_id": "toy",
        "io": {"dtype": "float32", "stages": io_stages, "state": state},
    }
    (directory / "bundle.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    return directory


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def toy_logits(ids: list[int], *, vocab: int, layers: int = 2, seed: int = 0, prefill: int) -> np.ndarray:
    """The toy model in numpy: prefill ``ids[:prefill]``, then one id at a time; logits after each."""
    embed, w_out, us = _weights(vocab, layers, seed)
    acc = [np.zeros(HIDDEN, dtype=np.float32) for _ in range(layers)]
    rows = []
    chunks = [(0, ids[:prefill])] + [(p, [ids[p]]) for p in range(prefill, len(ids))]
    for pos, chunk in chunks:
        h = embed[chunk]
        for layer in range(layers):
            acc[layer] = 0.5 * acc[layer] + h.sum(axis=0) + np.float32(pos) * us[layer]
            h = h + np.tanh(acc[layer])
        rows.append(h[-1] @ w_out)
    return np.stack(rows)
