"""A tiny model bundle that follows the graph contract of docs/bundle.md, for runner tests.

It exercises exactly what the runner owns — per-layer state in and out, positions, slots, stages,
``hidden_streams`` between stages — with arithmetic simple enough to recompute in numpy:

    streams (hc = 2): e = E[input_ids], r = 0     (stage 0)   or hidden_streams_in (later stages)
    per layer l:  acc_l' = acc_l + sum_t e[:, t] * u_l * (1 + (positions + t) / 64) ;  r = r + tanh(acc_l')
    logits = (e + r)[:, -1] @ W_out               (last stage)

The state reads only ``e`` and absolute positions, so feeding a prompt whole, in chunks or token by
token gives the same state, as it must for the real model.

The real DeepSeek V4 graphs are tested end to end elsewhere; this one only makes runner bugs (a
wrong row, a stale ping-pong buffer, a wrong position) show up as wrong logits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from appliance.engine.runner import OrtRunner
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
    f32 = TensorProto.FLOAT
    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one_axis"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "two_axis"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero_i"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one_i"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one_f"),
        numpy_helper.from_array(np.array(1 / 64, dtype=np.float32), "pos_scale"),
    ]
    streams = ["batch", "seq", 2, HIDDEN]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("positions", TensorProto.INT64, ["batch"]),
    ]
    outputs = []
    nodes = [
        # weight[b, t] = 1 + (positions[b] + t) / 64
        helper.make_node("Shape", ["input_ids"], ["seq_len"], start=1, end=2),
        helper.make_node("Squeeze", ["seq_len"], ["seq_scalar"]),
        helper.make_node("Range", ["zero_i", "seq_scalar", "one_i"], ["steps"]),
        helper.make_node("Unsqueeze", ["positions", "one_axis"], ["pos_col"]),
        helper.make_node("Add", ["pos_col", "steps"], ["abs_pos"]),
        helper.make_node("Cast", ["abs_pos"], ["abs_pos_f"], to=f32),
        helper.make_node("Mul", ["abs_pos_f", "pos_scale"], ["pos_scaled"]),
        helper.make_node("Add", ["pos_scaled", "one_f"], ["pos_w"]),
        helper.make_node("Unsqueeze", ["pos_w", "last_axis"], ["pos_w3"]),
    ]
    if is_first:
        inits.append(numpy_helper.from_array(embed, "embed"))
        inits.append(numpy_helper.from_array(np.zeros(HIDDEN, dtype=np.float32), "zero_row"))
        nodes += [
            helper.make_node("Gather", ["embed", "input_ids"], ["e"]),
            helper.make_node("Mul", ["e", "zero_row"], ["r_in"]),
        ]
    else:
        inputs.append(helper.make_tensor_value_info("hidden_streams_in", f32, streams))
        nodes.append(helper.make_node("Split", ["hidden_streams_in"], ["e4", "r4"], axis=2, num_outputs=2))
        nodes.append(helper.make_node("Squeeze", ["e4", "two_axis"], ["e"]))
        nodes.append(helper.make_node("Squeeze", ["r4", "two_axis"], ["r_in"]))
    nodes.append(helper.make_node("Mul", ["e", "pos_w3"], ["e_weighted"]))
    nodes.append(helper.make_node("ReduceSum", ["e_weighted", "one_axis"], ["e_sum"], keepdims=0))
    r = "r_in"
    for layer in range(first, last):
        p = f"l{layer}_"
        inits.append(numpy_helper.from_array(us[layer], p + "u"))
        inputs.append(helper.make_tensor_value_info(f"past.{layer}.acc", f32, ["batch", HIDDEN]))
        outputs.append(helper.make_tensor_value_info(f"present.{layer}.acc", f32, ["batch", HIDDEN]))
        nodes += [
            helper.make_node("Mul", ["e_sum", p + "u"], [p + "add"]),
            helper.make_node("Add", [f"past.{layer}.acc", p + "add"], [f"present.{layer}.acc"]),
            helper.make_node("Tanh", [f"present.{layer}.acc"], [p + "t"]),
            helper.make_node("Unsqueeze", [p + "t", "one_axis"], [p + "t3"]),
            helper.make_node("Add", [r, p + "t3"], [p + "r"]),
        ]
        r = p + "r"
    if is_last:
        inits.append(numpy_helper.from_array(w_out, "w_out"))
        inits.append(numpy_helper.from_array(np.array(-1, dtype=np.int64), "last_index"))
        nodes += [
            helper.make_node("Add", ["e", r], ["h"]),
            helper.make_node("Gather", ["h", "last_index"], ["h_last"], axis=1),
            helper.make_node("MatMul", ["h_last", "w_out"], ["logits"]),
        ]
        outputs.insert(0, helper.make_tensor_value_info("logits", f32, ["batch", vocab]))
    else:
        nodes += [
            helper.make_node("Unsqueeze", ["e", "two_axis"], ["e_out"]),
            helper.make_node("Unsqueeze", [r, "two_axis"], ["r_out"]),
            helper.make_node("Concat", ["e_out", "r_out"], ["hidden_streams"], axis=2),
        ]
        outputs.insert(0, helper.make_tensor_value_info("hidden_streams", f32, streams))
    graph = helper.make_graph(nodes, f"toy_{first}_{last}", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


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


def toy_runner(directory: Path, **options: Any) -> OrtRunner:
    """An OrtRunner straight from a toy bundle's bundle.json (the toy is unsigned: no load_bundle)."""
    document = json.loads((directory / "bundle.json").read_text(encoding="utf-8"))
    return OrtRunner(directory, document["io"], **options)


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def toy_logits(ids: list[int], *, vocab: int, layers: int = 2, seed: int = 0, prefill: int) -> np.ndarray:
    """The toy model in numpy: logits after ``ids[:prefill]``, then after each further id."""
    embed, w_out, us = _weights(vocab, layers, seed)
    acc = [np.zeros(HIDDEN, dtype=np.float32) for _ in range(layers)]
    rows = []
    for p, token in enumerate(ids):
        e = embed[token]
        r = np.zeros(HIDDEN, dtype=np.float32)
        for layer in range(layers):
            acc[layer] = acc[layer] + e * us[layer] * np.float32(1 + p / 64)
            r = r + np.tanh(acc[layer])
        if p >= prefill - 1:
            rows.append((e + r) @ w_out)
    return np.stack(rows)
