"""scripts/demo_qat.py (train_demo_model.py --qat-int4): the routed experts are trained and stored on a
grid that the int4 bundle's quantizer keeps exactly. No model is trained here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from appliance.model.graph.builder import QUANT_BLOCK
from appliance.model.quant import dequantize, interleave_gate_up, quantize_blocks
from tests.helpers.v4_reference import reference_model, tiny_config

_PATH = Path(__file__).resolve().parents[3] / "scripts" / "demo_qat.py"
_SPEC = importlib.util.spec_from_file_location("demo_qat", _PATH)
assert _SPEC and _SPEC.loader
demo_qat = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("demo_qat", demo_qat)
_SPEC.loader.exec_module(demo_qat)


def _gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.05


def _levels_and_steps(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    steps = demo_qat.grid_scales(weight)
    blocks = weight.reshape(*weight.shape[:-1], -1, QUANT_BLOCK)
    return blocks / steps[..., None], steps


def test_scales_keep_every_level_exact_in_bf16_and_fp16() -> None:
    scales = demo_qat.round_scale(torch.rand(4096, dtype=torch.float32) * 0.1 + 1e-4)
    levels = torch.arange(demo_qat.LEVELS[0], demo_qat.LEVELS[1] + 1, dtype=torch.float32)
    grid = scales[:, None] * levels[None, :]
    assert torch.equal(grid.to(torch.bfloat16).float(), grid)
    assert torch.equal(scales.to(torch.float16).float(), scales)
    # Rounding a scale moves it by at most half a unit in its 5th significant bit.
    raw = torch.rand(4096) + 0.5
    assert ((demo_qat.round_scale(raw) - raw).abs() / raw).max() <= 2.0**-demo_qat.SCALE_BITS
    assert float(demo_qat.round_scale(torch.tensor(0.0))) == 0.0


def test_snap_is_on_the_grid_and_no_worse_than_plain_rounding() -> None:
    w = _gaussian(4, 64, 192)
    snapped = demo_qat.snap(w)
    levels, _ = _levels_and_steps(snapped)
    assert torch.equal(levels, torch.round(levels))
    assert levels.min() >= demo_qat.LEVELS[0] and levels.max() <= demo_qat.LEVELS[1]
    assert torch.equal(demo_qat.snap(snapped), snapped)  # on the grid, snapping again changes nothing
    # The search includes plain symmetric rounding to the block's largest magnitude (ratio 1).
    blocks = w.reshape(4, 64, -1, QUANT_BLOCK)
    plain_step = demo_qat.round_scale(blocks.abs().amax(-1) / demo_qat.LEVELS[1])
    plain = torch.clamp(torch.round(blocks / plain_step[..., None]), *demo_qat.LEVELS) * plain_step[..., None]
    error = ((snapped - w) ** 2).sum()
    assert error <= ((plain.reshape(w.shape) - w) ** 2).sum()
    assert 0.03 < float(error.sqrt() / w.square().sum().sqrt()) < 0.12  # ~8.7% on Gaussian blocks


def test_zero_blocks_stay_zero() -> None:
    w = _gaussian(2, 8, 64)
    w[0, :, :QUANT_BLOCK] = 0
    assert torch.equal(demo_qat.snap(w)[0, :, :QUANT_BLOCK], torch.zeros(8, QUANT_BLOCK))


def test_fake_quant_forward_is_the_grid_and_backward_is_straight_through() -> None:
    w = _gaussian(2, 32, 64).requires_grad_()
    out = demo_qat.fake_quant(w)
    assert torch.allclose(out, demo_qat.snap(w), rtol=0, atol=1e-7)
    upstream = _gaussian(2, 32, 64, seed=1)
    (out * upstream).sum().backward()
    assert w.grad is not None and torch.equal(w.grad, upstream)


def test_builder_keeps_snapped_experts_exactly() -> None:
    # What the graph builder does to each expert stack: gate/up rows interleaved, down times
    # routed_scaling_factor, then quantize_blocks at the bundle's int4 block.
    gate_up = demo_qat.snap(_gaussian(8, 256, 192)).to(torch.bfloat16).float().numpy()
    down = demo_qat.snap(_gaussian(8, 192, 128, seed=2)).to(torch.bfloat16).float().numpy() * np.float32(1.5)
    for weight in (interleave_gate_up(gate_up), down):
        q = quantize_blocks(weight, bits=4, block_size=QUANT_BLOCK)
        assert np.array_equal(dequantize(q), weight)
    # The same Gaussian weights off the grid are not kept (the quantizer's ordinary path).
    raw = _gaussian(8, 192, 128, seed=2).numpy()
    assert not np.array_equal(dequantize(quantize_blocks(raw, bits=4, block_size=QUANT_BLOCK)), raw)


def test_attach_trains_only_the_routed_experts_and_detach_stores_the_grid() -> None:
    model = reference_model(tiny_config()).train()
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert demo_qat.attach(model) == 2 * 4  # gate_up + down in each of the 4 layers' routed experts
    # The optimizer made after attach steps the same Parameter objects as before.
    assert {id(p) for p in model.parameters()} == {id(p) for p in params}

    ids = torch.arange(40).reshape(2, 20) % 256
    loss = model(ids, labels=ids).loss
    loss.backward()
    experts = demo_qat.expert_modules(model)
    assert len(experts) == 4
    for module in experts:
        weight = module.parametrizations.gate_up_proj.original
        assert weight.grad is not None and weight.grad.abs().sum() > 0
        assert torch.allclose(module.gate_up_proj, demo_qat.snap(weight), rtol=0, atol=1e-7)

    # A save detaches, copies and attaches again: the same Parameter objects stay in training.
    demo_qat.detach(model)
    assert {id(p) for p in model.parameters()} == {id(p) for p in params}
    demo_qat.attach(model)
    assert {id(p) for p in model.parameters()} == {id(p) for p in params}
    model(ids, labels=ids).loss.backward()

    demo_qat.store_snapped(model)
    state = model.state_dict()
    assert [n for n, _ in model.named_parameters()] == names and sorted(state) == sorted(before)
    for key, value in state.items():
        if ".mlp.experts." in key:
            assert torch.equal(value, demo_qat.snap(before[key]))
            assert torch.equal(value.to(torch.bfloat16).float(), value)
        else:  # shared experts, attention, router, embeddings: untouched
            assert torch.equal(value, before[key]), key
    assert any(".mlp.experts." in key for key in state)
