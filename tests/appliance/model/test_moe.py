"""The two MoE paths — ONNX Runtime's com.microsoft.MoE (the default) and portable standard ops — compute
the same."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.model.graph import build_graphs, graph_io
from tests.helpers.v4_onnx import StageRunner
from tests.helpers.v4_reference import (
    StateDictCheckpoint,
    lowest_index_ties,
    reference_logits,
    reference_model,
    tiny_config,
)


@pytest.fixture(scope="module")
def model_and_ids() -> tuple[object, np.ndarray]:
    # Layer 0 routes by hash, layers 1-3 by top-k: both routers feed both expert paths.
    model = reference_model(tiny_config(), seed=3)
    return model, np.random.default_rng(3).integers(0, 256, 60)


def _runner(model: object, moe: str, logits: str) -> StageRunner:
    ckpt = StateDictCheckpoint(model)  # type: ignore[arg-type]
    graphs = build_graphs(ckpt, moe=moe, logits=logits)
    ops = {n.op_type for n in graphs[0].graph.node}
    assert ("MoE" in ops) == (moe == "ort")
    return StageRunner(graphs, graph_io(ckpt.config, logits=logits), max_context=96)


def test_ort_moe_matches_portable_moe_and_reference(model_and_ids: tuple[object, np.ndarray]) -> None:
    model, ids = model_and_ids
    portable = _runner(model, "portable", "all").step(ids[None], np.array([0]))[0]
    fused = _runner(model, "ort", "all").step(ids[None], np.array([0]))[0]
    with lowest_index_ties():
        ref = reference_logits(model, ids)  # type: ignore[arg-type]
    assert np.abs(fused - portable).max() <= 1e-4
    assert np.abs(fused - ref).max() <= 1e-4


def test_ort_moe_decode_matches_portable_decode(model_and_ids: tuple[object, np.ndarray]) -> None:
    model, ids = model_and_ids
    portable = _runner(model, "portable", "last").prefill_and_decode(ids, 17)
    fused = _runner(model, "ort", "last").prefill_and_decode(ids, 17)
    assert np.abs(fused - portable).max() <= 1e-4


def test_ort_moe_is_the_default(model_and_ids: tuple[object, np.ndarray]) -> None:
    ckpt = StateDictCheckpoint(model_and_ids[0])  # type: ignore[arg-type]
    assert "MoE" in {n.op_type for n in build_graphs(ckpt)[0].graph.node}


def test_a_hash_row_that_repeats_an_expert_counts_it_twice_on_every_path() -> None:
    """The fused operators' top-k picks an expert once; their router input adds the repeated expert's
    scores, which is transformers' sum of the two identical products."""
    model = reference_model(tiny_config(num_experts_per_tok=3), seed=5)
    table = model.model.layers[0].mlp.gate.tid2eid
    table[:, 1] = table[:, 0]  # every token: its first expert twice, beside a third
    ids = np.random.default_rng(5).integers(0, 256, 24)
    portable = _runner(model, "portable", "all").step(ids[None], np.array([0]))[0]
    fused = _runner(model, "ort", "all").step(ids[None], np.array([0]))[0]
    with lowest_index_ties():
        ref = reference_logits(model, ids)  # type: ignore[arg-type]
    assert np.abs(portable - ref).max() <= 1e-4
    assert np.abs(fused - ref).max() <= 1e-4
