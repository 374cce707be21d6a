"""Reduced-precision graphs: fp16/bf16 activations, int8/int4 weights (MatMulNBits + QMoE).

Random tiny models are a harsh bench for precision: their logit margins are small and discrete
choices (expert routing, the indexer's top-k) amplify rounding, so these tests compare against what
the same precision does to the reference itself, and bench/graph_quality.py prints the figures.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from appliance.model.graph import build_graphs, graph_io
from tests.helpers.v4_onnx import StageRunner
from tests.helpers.v4_reference import StateDictCheckpoint, lowest_index_ties, reference_model, tiny_config

LEN = 60


@pytest.fixture(scope="module")
def setup() -> tuple[Any, StateDictCheckpoint, np.ndarray, np.ndarray]:
    model = reference_model(tiny_config(), seed=9)
    ids = np.random.default_rng(9).integers(0, 256, LEN)
    with lowest_index_ties(), torch.no_grad():
        ref = model(torch.tensor(ids)[None], use_cache=False).logits[0].numpy()
    return model, StateDictCheckpoint(model), ids, ref


def _logits(ckpt: StateDictCheckpoint, ids: np.ndarray, **options: Any) -> np.ndarray:
    graphs = build_graphs(ckpt, logits="all", **options)
    io = graph_io(ckpt.config, logits="all", dtype=options.get("dtype", "fp32"))
    return StageRunner(graphs, io, max_context=64).step(ids[None], np.array([0]))[0]


def test_fp16_graph_is_as_close_to_fp32_as_the_fp16_reference(
    setup: tuple[Any, StateDictCheckpoint, np.ndarray, np.ndarray],
) -> None:
    model, ckpt, ids, ref = setup
    ours = _logits(ckpt, ids, dtype="fp16")
    with lowest_index_ties(), torch.no_grad():
        half = model.half()(torch.tensor(ids)[None], use_cache=False).logits[0].float().numpy()
        model.float()
    ours_err = np.abs(ours - ref).mean()
    ref_err = np.abs(half - ref).mean()
    assert ours_err <= 2 * ref_err + 1e-3
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_bf16_graph_is_well_typed(setup: tuple[Any, StateDictCheckpoint, np.ndarray, np.ndarray]) -> None:
    """ONNX Runtime's CPU provider has no bf16 kernels for most ops; the graph itself must type-check."""
    _, ckpt, _, _ = setup
    for moe in ("portable", "ort"):
        graph = build_graphs(ckpt, dtype="bf16", moe=moe)[0]
        inferred = onnx.shape_inference.infer_shapes(graph, check_type=True, strict_mode=True)
        onnx.checker.check_model(inferred)
        weights = [i for i in graph.graph.initializer if i.name.endswith("q_a_proj.weight")]
        assert weights and all(w.data_type == onnx.TensorProto.BFLOAT16 for w in weights)


@pytest.mark.parametrize(("quant", "min_cosine"), [("int8", 0.9), ("int4", 0.5)])
def test_quantized_graphs_use_nbits_ops_and_track_fp32(
    setup: tuple[Any, StateDictCheckpoint, np.ndarray, np.ndarray], quant: str, min_cosine: float
) -> None:
    _, ckpt, ids, ref = setup
    ops = Counter(n.op_type for n in build_graphs(ckpt, quant=quant)[0].graph.node)
    assert ops["QMoE"] == ckpt.config.num_hidden_layers
    assert ops["MatMulNBits"] >= 4 * ckpt.config.num_hidden_layers
    ours = _logits(ckpt, ids, quant=quant)
    cosine = (ours * ref).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cosine.mean() >= min_cosine
    assert np.abs(ours - ref).max() > 1e-4  # the weights really are quantized


class _Dequantized:
    """The checkpoint with every weight a quantized bundle quantizes replaced by its dequantized
    value (routed experts at ``expert_bits``, the other quantized projections at 8)."""

    _FLOAT_KEPT = ("gate.weight", "compressor.kv_proj", "compressor.gate_proj", "indexer.kv_proj",
                   "indexer.gate_proj", "weights_proj", "lm_head", "embed_tokens", "o_a_proj", "_hc.", "hc_head",
                   "position_bias")  # fmt: skip

    def __init__(self, ckpt: StateDictCheckpoint, expert_bits: int) -> None:
        self.config = ckpt.config
        self._ckpt = ckpt
        self._expert_bits = expert_bits

    def tensor(self, name: str) -> np.ndarray:
        from appliance.model.quant import dequantize, quantize_blocks

        value = self._ckpt.tensor(name)
        if value.ndim < 2 or value.dtype != np.float32 or any(k in name for k in self._FLOAT_KEPT):
            return value
        routed = ".experts." in name and "shared_experts" not in name
        return dequantize(quantize_blocks(value, bits=self._expert_bits if routed else 8, block_size=32))


@pytest.mark.parametrize(("quant", "expert_bits"), [("int8", 8), ("int4", 4)])
def test_quantized_graph_computes_the_fp32_graph_of_its_dequantized_weights(
    setup: tuple[Any, StateDictCheckpoint, np.ndarray, np.ndarray], quant: str, expert_bits: int
) -> None:
    """MatMulNBits and QMoE (fp32 activations, MatMulNBits computing in fp32: accuracy_level unset)
    multiply by exactly quant.dequantize's weights; QMoE at 8 bits only because the runner keeps it
    off its int8-activation kernels (exact_qmoe_activations)."""
    _, ckpt, ids, _ = setup
    quantized = _logits(ckpt, ids, quant=quant, accuracy_level=0)
    simulated = _logits(_Dequantized(ckpt, expert_bits), ids)  # type: ignore[arg-type]
    assert np.abs(quantized - simulated).max() <= 1e-4
