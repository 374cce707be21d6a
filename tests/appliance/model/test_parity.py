"""The ONNX graphs against transformers' DeepSeek-V4 on small random configs (fp32, max |diff| <= 1e-4).

Three configs cover every layer type (sliding, CSA, HCA), both MLP types (hash-routed, top-k), hc_mult
2..4, and index_topk below and above the number of compressed entries; the sequences cross the
sliding window and many compression windows. The reference runs with ``lowest_index_ties`` (see
appliance/model/graph/compressor.py for why that is the only change it needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.model.graph import build_graphs, graph_io
from tests.helpers.v4_onnx import StageRunner
from tests.helpers.v4_reference import (
    StateDictCheckpoint,
    lowest_index_ties,
    reference_greedy,
    reference_logits,
    reference_model,
    reference_stepwise_logits,
    tiny_config,
)

S, C, H = "sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"
TOL = 1e-4
FULL_LEN = 100
PREFILL = 21  # ends mid-window for every compression rate used below
DECODE_STEPS = 64

CONFIGS: dict[str, dict[str, Any]] = {
    # index_topk 3 < up to 21 CSA entries; HCA rate 8; hc_mult 2.
    "small-topk": {},
    # index_topk 64 > every entry count; hc_mult 4; HCA first; two hash layers; wider window.
    "large-topk": {
        "num_hidden_layers": 3,
        "layer_types": [H, C, S],
        "mlp_layer_types": ["hash_moe", "hash_moe", "moe"],
        "index_topk": 64,
        "hc_mult": 4,
        "sliding_window": 16,
        "compress_rates": {C: 4, H: 16},
        "num_experts_per_tok": 3,
    },
    # plain (non-YaRN) compressed rope, half the head rotated, 8 heads in 4 groups, tied embeddings.
    "wide": {
        "num_hidden_layers": 5,
        "layer_types": [C, S, H, C, H],
        "mlp_layer_types": ["hash_moe", "moe", "moe", "moe", "moe"],
        "num_attention_heads": 8,
        "o_groups": 4,
        "partial_rotary_factor": 0.5,
        "rope_parameters": None,
        "index_n_heads": 4,
        "index_topk": 5,
        "n_routed_experts": 6,
        "num_experts_per_tok": 3,
        "hc_mult": 3,
        "tie_word_embeddings": True,
    },
}


@dataclass
class Case:
    model: Any
    ckpt: StateDictCheckpoint
    ids: np.ndarray
    full: np.ndarray  # reference full forward over ids [FULL_LEN, vocab]


@pytest.fixture(scope="module", params=list(CONFIGS))
def case(request: pytest.FixtureRequest) -> Case:
    model = reference_model(tiny_config(**CONFIGS[request.param]), seed=len(request.param))
    ids = np.random.default_rng(7).integers(0, model.config.vocab_size, FULL_LEN)
    with lowest_index_ties():
        full = reference_logits(model, ids)
    return Case(model, StateDictCheckpoint(model), ids, full)


def runner(case: Case, logits: str = "last", **kwargs: Any) -> StageRunner:
    graphs = build_graphs(case.ckpt, logits=logits, **kwargs)
    io = graph_io(case.ckpt.config, logits=logits, stages=kwargs.get("stages", 1))
    return StageRunner(graphs, io, max_context=128)


def test_full_sequence_logits_match_reference(case: Case) -> None:
    out = runner(case, "all").step(case.ids[None], np.array([0]))[0]
    assert out.shape == case.full.shape
    assert np.abs(out - case.full).max() <= TOL


def test_incremental_decode_matches_teacher_forced_full_forward(case: Case) -> None:
    n = PREFILL + DECODE_STEPS
    steps = runner(case).prefill_and_decode(case.ids[:n], PREFILL)
    assert steps.shape[0] == DECODE_STEPS + 1
    assert np.abs(steps - case.full[PREFILL - 1 : n]).max() <= TOL


@pytest.mark.slow
def test_greedy_continuation_matches_reference(case: Case) -> None:
    prompt = [int(t) for t in case.ids[:PREFILL]]
    with lowest_index_ties():
        expected = reference_greedy(case.model, prompt, DECODE_STEPS)
    assert runner(case).greedy(prompt, DECODE_STEPS) == expected


def test_future_tokens_do_not_change_earlier_logits(case: Case) -> None:
    """Causality across the window, the compressors and the indexer: rewrite the tail, keep the head."""
    changed = case.ids.copy()
    changed[60:] = (changed[60:] + 1) % case.model.config.vocab_size
    r = runner(case, "all")
    a = r.step(case.ids[None], np.array([0]))[0]
    r.reset()
    b = r.step(changed[None], np.array([0]))[0]
    assert np.abs(a[:60] - b[:60]).max() <= 1e-6
    assert np.abs(a[60:] - b[60:]).max() > 1e-3


@pytest.mark.slow
def test_reference_decode_disagrees_only_by_tie_breaking() -> None:
    """The reference's own full-vs-cached disagreement on CSA layers vanishes once ties break alike."""
    model = reference_model(tiny_config(index_topk=2))
    ids = np.random.default_rng(0).integers(0, 256, 48)
    loose = np.abs(reference_stepwise_logits(model, ids, 8) - reference_logits(model, ids)[7:]).max()
    with lowest_index_ties():
        pinned = np.abs(reference_stepwise_logits(model, ids, 8) - reference_logits(model, ids)[7:]).max()
    assert loose > 1e-2
    assert pinned <= 1e-5


def test_save_pretrained_directory_builds_to_reference_logits(tmp_path: Path) -> None:
    """End to end through the real reader: save_pretrained (DeepSeek's names on disk) -> open_checkpoint
    (renames back, reads one expert at a time) -> graphs -> the reference's logits."""
    from tokenizers import Tokenizer, models

    from appliance.model.checkpoint import open_checkpoint

    model = reference_model(tiny_config(), seed=4)
    model.save_pretrained(tmp_path)
    Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")).save(str(tmp_path / "tokenizer.json"))
    ids = np.random.default_rng(4).integers(0, 256, 70)
    ckpt = open_checkpoint(tmp_path)
    graphs = build_graphs(ckpt, logits="all", moe="ort")
    out = StageRunner(graphs, graph_io(ckpt.config, logits="all"), max_context=128).step(
        ids[None], np.array([0])
    )[0]
    with lowest_index_ties():
        ref = reference_logits(model, ids)
    assert np.abs(out - ref).max() <= TOL
