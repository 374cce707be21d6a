"""The prefill chunk is the largest whose estimated activations fit the budget; an explicit chunk wins.

The estimate itself is held above the peak memory measured at V4-Flash dimensions in
tests/appliance/model/test_flash_dims.py.
"""

from __future__ import annotations

import pytest

from appliance.engine import LLMEngine
from appliance.engine.memory import prefill_bytes, prefill_chunk, prefill_chunk_for_bundle
from appliance.engine.runner import OrtRunner
from appliance.model.config import V4Config
from tests.appliance.model.test_flash_dims import FLASH
from tests.helpers.engine_demo import Demo, build_demo_model
from tests.helpers.v4_reference import tiny_config

# V4-Flash: the test's per-tensor dimensions with the real expert count and top-k.
FLASH_CONFIG = V4Config.from_dict(
    tiny_config(**{**FLASH, "n_routed_experts": 256, "num_experts_per_tok": 6}).to_dict()
)
GIB = 1 << 30


@pytest.mark.parametrize("moe", ["ort", "portable"])
@pytest.mark.parametrize("budget", [GIB // 2, GIB, 4 * GIB])
def test_the_chunk_is_the_largest_that_fits(moe: str, budget: int) -> None:
    def need(t: int) -> int:
        return prefill_bytes(FLASH_CONFIG, tokens=t, context=8192, dtype="fp16", moe=moe)

    chunk = prefill_chunk(FLASH_CONFIG, budget=budget, context=8192, dtype="fp16", moe=moe)
    assert need(chunk) <= budget < need(chunk + 1)


def test_a_portable_moe_prefills_in_small_chunks_and_a_fused_one_in_large() -> None:
    """The portable path gathers each token's chosen experts: ~300 MiB a token in fp16 at V4-Flash."""
    portable = prefill_chunk(FLASH_CONFIG, budget=4 * GIB, context=8192, dtype="fp16", moe="portable")
    fused = prefill_chunk(FLASH_CONFIG, budget=4 * GIB, context=8192, dtype="fp16", moe="ort")
    qmoe = prefill_chunk(
        FLASH_CONFIG, budget=4 * GIB, context=8192, dtype="fp16", quant="int4", moe="portable"
    )
    assert portable < 16 and fused > 512 and qmoe == fused
    per_token = prefill_bytes(
        FLASH_CONFIG, tokens=2, context=8192, dtype="fp16", moe="portable"
    ) - prefill_bytes(FLASH_CONFIG, tokens=1, context=8192, dtype="fp16", moe="portable")
    assert per_token >= 6 * 3 * 2048 * 4096 * 2  # k x (gate, up, down) x fp16


def test_the_chunk_shrinks_with_context_and_never_passes_it() -> None:
    """The indexer scores every compressed entry per query: a longer context leaves room for fewer tokens."""
    short = prefill_chunk(FLASH_CONFIG, budget=4 * GIB, context=512, dtype="fp16")
    mid = prefill_chunk(FLASH_CONFIG, budget=4 * GIB, context=8192, dtype="fp16")
    long = prefill_chunk(FLASH_CONFIG, budget=4 * GIB, context=65536, dtype="fp16")
    assert short == 512 and long < mid
    assert prefill_chunk(FLASH_CONFIG, budget=1, context=512) == 1  # nothing fits: one token a call


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build_demo_model(tmp_path_factory.mktemp("memory"))


def test_the_engine_sizes_its_prefill_chunk_from_the_bundle(demo: Demo) -> None:
    bundle = demo.bundle()
    budget = prefill_bytes(bundle.config, tokens=40, context=256)
    engine = LLMEngine.from_bundle(bundle, num_slots=1, max_context=256, prefill_memory=budget)
    assert isinstance(engine.runner, OrtRunner)
    assert engine.runner.prefill_chunk == 40
    assert prefill_chunk_for_bundle(bundle.info, bundle.config, budget=budget, context=256) == 40
    pinned = LLMEngine.from_bundle(
        bundle, num_slots=1, max_context=256, prefill_chunk=7, prefill_memory=budget
    )
    assert isinstance(pinned.runner, OrtRunner) and pinned.runner.prefill_chunk == 7


def test_a_bundle_that_names_no_moe_path_is_sized_as_portable() -> None:
    """What bundle.json says is used; one without ``moe`` gets the path that needs the most memory."""
    old = prefill_chunk_for_bundle({"dtype": "fp16"}, FLASH_CONFIG, budget=4 * GIB, context=8192)
    assert old == prefill_chunk(FLASH_CONFIG, budget=4 * GIB, context=8192, dtype="fp16", moe="portable")
    fused = prefill_chunk_for_bundle(
        {"dtype": "fp16", "moe": "ort"}, FLASH_CONFIG, budget=4 * GIB, context=8192
    )
    assert fused > old
