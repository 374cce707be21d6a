"""End to end on real V4 graphs: the engine's greedy tokens equal transformers' greedy generate().

The demo model (the checkpoint engineer's, loaded and verified like production) and the graph
builder's parity configs (tests/appliance/model/test_parity.py), each run as a mixed batch through
continuous batching; plus stage splitting and seeded sampling on the real graphs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from transformers import DeepseekV4ForCausalLM

from appliance.engine import LLMEngine, SamplingParams
from appliance.engine.runner import OrtRunner
from appliance.model.graph import build_graphs, graph_io
from tests.appliance.model.test_parity import CONFIGS
from tests.helpers.engine_demo import Demo, build_demo_model
from tests.helpers.engine_tokenizer import build_tokenizer
from tests.helpers.v4_reference import StateDictCheckpoint, lowest_index_ties, reference_model, tiny_config


def reference_generate(model: DeepseekV4ForCausalLM, prompt: list[int], n: int, eos: int) -> list[int]:
    """transformers' greedy generate(); like the engine, it stops after EOS."""
    # lowest_index_ties: the reference's indexer then breaks score ties like ONNX TopK (see the helper).
    with torch.no_grad(), lowest_index_ties():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=eos
        )
    return [int(t) for t in out[0, len(prompt) :]]


def prompts(vocab: int, lengths: tuple[int, ...], seed: int = 3) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    # Ids from 10 up: clear of BOS/EOS and the other special tokens of the demo tokenizer.
    return [[int(t) for t in rng.integers(10, vocab, n)] for n in lengths]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build_demo_model(tmp_path_factory.mktemp("ref"))


def test_demo_model_greedy_equals_transformers_generate(demo: Demo) -> None:
    model = DeepseekV4ForCausalLM.from_pretrained(demo.checkpoint, dtype=torch.float32).eval()
    batch = prompts(model.config.vocab_size, (19, 5, 40))
    n = 16  # crosses compression windows (rates 4 and 16); the long prompt is past the window of 32
    engine = LLMEngine.from_bundle(demo.bundle(), num_slots=3, max_context=128)
    got = engine.generate(batch, SamplingParams(temperature=0.0, max_tokens=n))
    assert engine.tokenizer.eos_id is not None
    assert got == [reference_generate(model, p, n, engine.tokenizer.eos_id) for p in batch]
    assert sum(len(t) for t in got) > n  # not everything ended at once on EOS


def write_bundle_dir(directory: Path, graphs: list[onnx.ModelProto], io: dict[str, Any]) -> Path:
    directory.mkdir(parents=True)
    for graph, stage in zip(graphs, io["stages"], strict=True):
        onnx.save(graph, str(directory / stage["file"]))
    return directory


def engine_for(
    tmp: Path,
    model: DeepseekV4ForCausalLM,
    *,
    stages: int = 1,
    slots: int = 3,
    chunk: int = 1024,
    in_place: bool = True,
) -> LLMEngine:
    ckpt = StateDictCheckpoint(model)
    io = graph_io(ckpt.config, stages=stages)
    bundle_dir = write_bundle_dir(tmp / f"stages{stages}", build_graphs(ckpt, stages=stages), io)
    runner = OrtRunner(
        bundle_dir, io, num_slots=slots, max_context=96, prefill_chunk=chunk, decode_in_place=in_place
    )
    # The parity configs' vocabulary is ids only; any tokenizer serves the detokenizer.
    return LLMEngine(runner, build_tokenizer(), stop_ids=())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity_configs_greedy_equals_transformers_generate(name: str, tmp_path: Path) -> None:
    model = reference_model(tiny_config(**CONFIGS[name]), seed=len(name))
    batch = prompts(model.config.vocab_size, (21, 6, 33))
    n = 32
    engine = engine_for(tmp_path, model)
    got = engine.generate(batch, SamplingParams(temperature=0.0, max_tokens=n))
    eos = engine.tokenizer.eos_id
    assert eos is not None
    assert got == [reference_generate(model, p, n, eos) for p in batch]


def test_real_graphs_two_stages_and_batching_give_the_same_seeded_tokens(tmp_path: Path) -> None:
    model = reference_model(tiny_config(), seed=0)
    batch = prompts(model.config.vocab_size, (21, 6, 33, 9))
    params = SamplingParams(temperature=0.8, top_p=0.95, seed=11, max_tokens=20)
    one = engine_for(tmp_path, model, stages=1, slots=3).generate(batch, params)
    two = engine_for(tmp_path, model, stages=2, slots=3)
    assert two.runner.num_stages == 2  # type: ignore[attr-defined]
    assert two.generate(batch, params) == one
    alone = engine_for(tmp_path / "alone", model, stages=1, slots=1)
    assert [alone.generate([p], params)[0] for p in batch] == one
    # Prefill in chunks of 5: across the window (8) and the compression rates (4, 8).
    chunked = engine_for(tmp_path / "chunked", model, stages=2, slots=3, chunk=5)
    assert chunked.generate(batch, params) == one
    # The ping-pong state update (the CUDA default) on the real graphs.
    ping_pong = engine_for(tmp_path / "ping-pong", model, stages=2, slots=3, chunk=5, in_place=False)
    assert ping_pong.generate(batch, params) == one
