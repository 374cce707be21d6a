"""A prefill at V4-Flash's real per-tensor dimensions holds activations, not experts.

test_flash_dims.py's checkpoint (hidden 4096, experts 2048 wide, 4 experts top-2, 3 layers) built
into an unquantized bundle the default way, then prefilled in one call of 64 and of 256 tokens,
each in a fresh process (tests/helpers/prefill_rss.py). The portable path would gather
``T x k`` expert matrices — 192 MiB a token here in float32, 36 GiB more at 256 tokens than at 64;
the fused path's peak must grow by a small fraction of that, and stay within what
appliance/engine/memory.py estimates (the engine sizes its prefill chunks by that estimate).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.engine.memory import prefill_bytes
from appliance.model.bundle import build_bundle
from appliance.model.config import V4Config
from appliance.model.demo import write_random_checkpoint
from tests.appliance.model.test_flash_dims import FLASH, KEY
from tests.helpers.prefill_rss import measure_prefill

MIB = 1 << 20
CONTEXT = 512


@pytest.mark.slow
def test_flash_dims_prefill_memory_does_not_scale_with_experts(tmp_path: Path) -> None:
    ckpt = write_random_checkpoint(tmp_path / "ckpt", FLASH)
    bundle = build_bundle(ckpt, tmp_path / "bundle", signing_key=KEY, version=1)
    config = V4Config.from_dict(dict(FLASH))
    expert = 3 * config.moe_intermediate_size * config.hidden_size * 4  # gate, up, down in float32

    short, long = (measure_prefill(bundle, t, context=CONTEXT) for t in (64, 256))
    assert short["finite"] and long["finite"]
    gather_growth = (256 - 64) * config.num_experts_per_tok * expert / MIB
    assert long["grown_mib"] - short["grown_mib"] < gather_growth / 20
    for got in (short, long):
        estimate = prefill_bytes(config, tokens=got["tokens"], context=CONTEXT) / MIB
        assert got["grown_mib"] <= estimate, (got, estimate)
