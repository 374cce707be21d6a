"""OrtRunner on a toy bundle that follows docs/bundle.md: real ONNX Runtime, IO binding, slots, stages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from appliance.engine.engine import LLMEngine
from appliance.engine.runner import QMOE_ACTIVATIONS_ENV, OrtRunner, _stage_devices
from appliance.engine.tokenizer import Tokenizer
from appliance.engine.types import SamplingParams
from shared.errors import ConfigError, ModelError
from tests.helpers.engine_toy_bundle import toy_logits, toy_runner, write_toy_bundle

GREEDY = SamplingParams(temperature=0.0, max_tokens=10)
SEEDED = SamplingParams(temperature=1.0, top_k=40, seed=99, max_tokens=10)
PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [20], [5, 6, 7, 8, 9, 10]]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_bundle(tmp_path_factory.mktemp("toy") / "bundle")


@pytest.fixture(scope="module")
def toy2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_bundle(tmp_path_factory.mktemp("toy2") / "bundle", stages=2)


@pytest.fixture(params=[True, False], ids=["in-place", "ping-pong"])
def in_place(request: pytest.FixtureRequest) -> bool:
    """Both decode state-update modes: in place (CPU default) and ping-pong (CUDA default)."""
    return bool(request.param)


def engine(
    bundle: Path,
    *,
    num_slots: int = 4,
    max_context: int = 64,
    prefill_chunk: int = 1024,
    in_place: bool = True,
) -> LLMEngine:
    runner = toy_runner(
        bundle,
        num_slots=num_slots,
        max_context=max_context,
        prefill_chunk=prefill_chunk,
        decode_in_place=in_place,
    )
    tok = Tokenizer.from_file(bundle / "tokenizer.json")
    return LLMEngine(runner, tok)


def test_logits_match_the_model_computed_in_numpy(toy: Path, in_place: bool) -> None:
    eng = engine(toy, in_place=in_place)
    seq = eng.add_request("r", PROMPTS[2], GREEDY)
    rows = []
    original = eng.runner.run

    def spy(kind, seqs):  # type: ignore[no-untyped-def]
        out = original(kind, seqs)
        rows.append(out[0])
        return out

    eng.runner.run = spy  # type: ignore[method-assign]
    while eng.has_work:
        eng.step()
    want = toy_logits(seq.token_ids[:-1], vocab=eng.runner.vocab_size, prefill=len(PROMPTS[2]))  # type: ignore[attr-defined]
    np.testing.assert_allclose(np.stack(rows), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_same_tokens_alone_and_batched(toy: Path, params: SamplingParams, in_place: bool) -> None:
    alone = [engine(toy, num_slots=1).generate([p], params)[0] for p in PROMPTS]
    assert engine(toy, num_slots=3, in_place=in_place).generate(PROMPTS, params) == alone


def test_a_hole_in_the_slots_does_not_disturb_the_others(toy: Path, in_place: bool) -> None:
    alone = {i: engine(toy, num_slots=1).generate([PROMPTS[i]], GREEDY)[0] for i in range(3)}
    eng = engine(toy, num_slots=3, in_place=in_place)
    seqs = [eng.add_request(f"r{i}", PROMPTS[i], GREEDY) for i in range(3)]
    eng.step()
    eng.step()
    eng.abort("r0")  # slot 0 becomes a hole below running slots 1 and 2
    while eng.has_work:
        eng.step()
    assert seqs[1].completion_ids == alone[1] and seqs[2].completion_ids == alone[2]
    # A newcomer takes the hole and still matches its solo run.
    newcomer = eng.add_request("r3", PROMPTS[0], GREEDY)
    late = eng.add_request("r4", PROMPTS[1], GREEDY)
    while eng.has_work:
        eng.step()
    assert newcomer.completion_ids == alone[0] and late.completion_ids == alone[1]


@pytest.mark.parametrize("chunk", [2, 3])
def test_chunked_prefill_gives_the_same_tokens(toy2: Path, chunk: int, in_place: bool) -> None:
    # Prompts of 1..6 tokens: one chunk, an even and an odd number of chunks, a ragged last chunk.
    whole = engine(toy2, num_slots=3).generate(PROMPTS, SEEDED)
    chunked = engine(toy2, num_slots=3, prefill_chunk=chunk, in_place=in_place)
    assert chunked.generate(PROMPTS, SEEDED) == whole


def test_two_stages_give_the_same_tokens_as_one(toy: Path, toy2: Path, in_place: bool) -> None:
    one = engine(toy, num_slots=3).generate(PROMPTS, SEEDED)
    two_engine = engine(toy2, num_slots=3, in_place=in_place)
    assert two_engine.runner.num_stages == 2  # type: ignore[attr-defined]
    assert two_engine.generate(PROMPTS, SEEDED) == one


def test_unusable_bundles_are_model_errors(tmp_path: Path, toy: Path) -> None:
    io = json.loads((toy / "bundle.json").read_text())["io"]
    with pytest.raises(ModelError, match="graph file missing"):
        OrtRunner(tmp_path, io, num_slots=1, max_context=8)
    renamed = json.loads(json.dumps(io))
    renamed["state"][0]["input"] = "past.0.bogus"
    with pytest.raises(ModelError, match=r"does not match bundle\.json io \(missing past\.0\.bogus"):
        OrtRunner(toy, renamed, num_slots=1, max_context=8)
    del renamed["state"]
    with pytest.raises(ModelError, match="malformed"):
        OrtRunner(toy, renamed, num_slots=1, max_context=8)


def test_stages_go_on_consecutive_gpus_or_the_ids_given() -> None:
    assert _stage_devices("cpu", (3,), 2) == [("cpu", 0), ("cpu", 0)]
    assert _stage_devices("cuda", (0,), 3) == [("cuda", 0), ("cuda", 1), ("cuda", 2)]
    assert _stage_devices("cuda", (2,), 2) == [("cuda", 2), ("cuda", 3)]
    assert _stage_devices("cuda", (4, 1), 2) == [("cuda", 4), ("cuda", 1)]


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="has CUDA")
def test_cuda_without_the_cuda_provider_is_a_config_error(toy: Path) -> None:
    io = json.loads((toy / "bundle.json").read_text())["io"]
    with pytest.raises(ConfigError, match="no CUDA provider"):
        OrtRunner(toy, io, num_slots=1, max_context=8, provider="cuda")


def test_opening_a_bundle_keeps_8bit_experts_on_fp32_activations(
    toy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime reads ORT_QMOE_CPU_QNBIT_GEMM when a session builds its QMoE kernels: the runner
    sets it to fp32 before opening a stage (tests/appliance/model/test_quant.py shows what that
    changes), and leaves an operator's own value alone."""
    monkeypatch.delenv(QMOE_ACTIVATIONS_ENV, raising=False)
    engine(toy)
    assert os.environ[QMOE_ACTIVATIONS_ENV] == "fp32"
    monkeypatch.setenv(QMOE_ACTIVATIONS_ENV, "int8")
    engine(toy)
    assert os.environ[QMOE_ACTIVATIONS_ENV] == "int8"
