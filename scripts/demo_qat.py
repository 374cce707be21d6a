"""Quantization-aware training of the demo model's routed experts for the int4 bundle (``--qat-int4``).

Dev tool beside ``train_demo_model.py`` (torch; the product never imports it). The routed experts'
weights go through fake quantization onto a grid that ``appliance/model/quant.py`` stores exactly,
with a straight-through estimator (the forward pass sees the grid values, the gradient reaches the
float weights as if rounding were the identity), and the checkpoint stores the grid values themselves.

The grid, per block of ``QUANT_BLOCK`` consecutive inputs (the builder's int4 block): ``w = k * s``
with integer ``k`` in -8..7 — the int4 format with zero point 8, which quant.py's ``_grid_rows``
recognises and keeps bit for bit instead of searching a range. ``s`` has ``SCALE_BITS`` significant
bits, so that every ``k * s`` is exact in bf16 (8 significant bits: 7 x 31 < 256), the dtype the
checkpoint is stored in, and in fp16 for an fp16 bundle's scales. Each block's ``s`` is chosen as
quant.py chooses a range: each shrink in ``CLIP_RATIOS`` of the block's largest magnitude, plus the
least-squares refit of that step to its levels, keeping the one with the least squared error.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from appliance.model.graph.builder import QUANT_BLOCK
from appliance.model.quant import CLIP_RATIOS

LEVELS = (-8, 7)
SCALE_BITS = 5
#: The routed experts' weights in transformers' DeepseekV4Experts ([E, out, in]; blocks along in).
EXPERT_WEIGHTS = ("gate_up_proj", "down_proj")


def round_scale(scale: torch.Tensor) -> torch.Tensor:
    """Nearest value with ``SCALE_BITS`` significant bits (zero stays zero)."""
    mantissa, exponent = torch.frexp(scale)
    unit = float(2**SCALE_BITS)
    return torch.ldexp(torch.round(mantissa * unit) / unit, exponent)


def _levels(blocks: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.round(blocks / scale[..., None]), *LEVELS)


@torch.no_grad()
def grid_scales(weight: torch.Tensor, block: int = QUANT_BLOCK) -> torch.Tensor:
    """Each block's step ``[..., N, K / block]`` for ``weight`` ``[..., N, K]`` (K a multiple of block)."""
    blocks = weight.detach().float().reshape(*weight.shape[:-1], -1, block)
    top = blocks.abs().amax(dim=-1)
    best = torch.ones_like(top)
    best_error = torch.full_like(top, float("inf"))
    for ratio in CLIP_RATIOS:
        scale = round_scale(top * ratio / LEVELS[1])
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        levels = _levels(blocks, scale)
        norm = (levels * levels).sum(dim=-1)
        refit = round_scale((blocks * levels).sum(dim=-1) / norm.clamp(min=1.0))
        for candidate in (scale, torch.where(refit > 0, refit, scale)):
            error = ((blocks - _levels(blocks, candidate) * candidate[..., None]) ** 2).sum(dim=-1)
            better = error < best_error
            best = torch.where(better, candidate, best)
            best_error = torch.where(better, error, best_error)
    return best


def snap(weight: torch.Tensor, block: int = QUANT_BLOCK) -> torch.Tensor:
    """The grid values of ``weight`` (float32, no gradient): ``k * s`` per block."""
    scale = grid_scales(weight, block)
    blocks = weight.detach().float().reshape(*weight.shape[:-1], -1, block)
    return (_levels(blocks, scale) * scale[..., None]).reshape(weight.shape)


def fake_quant(weight: torch.Tensor, block: int = QUANT_BLOCK) -> torch.Tensor:
    """``snap(weight)`` forward, identity backward (straight-through estimator)."""
    return weight + (snap(weight, block).to(weight.dtype) - weight).detach()


class Int4Grid(nn.Module):
    """A parametrization: the module's weight as the forward pass sees it is on the int4 grid."""

    def __init__(self, block: int = QUANT_BLOCK):
        super().__init__()
        self.block = block

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quant(weight, self.block)


def expert_modules(model: nn.Module) -> list[nn.Module]:
    """The modules that hold routed experts' stacked weights (not the shared experts: those are
    MatMulNBits projections, 8 bits in the int4 bundle)."""
    return [
        m
        for m in model.modules()
        if all(isinstance(getattr(m, name, None), torch.Tensor) for name in EXPERT_WEIGHTS)
        and type(m).__name__.endswith("Experts")
    ]


def attach(model: nn.Module) -> int:
    """Put the routed experts' weights behind ``Int4Grid``; returns how many weights.

    A parametrization is recomputed at every read: run the forward pass in ``parametrize.cached()``
    (the experts read each weight once per expert).
    """
    count = 0
    for module in expert_modules(model):
        for name in EXPERT_WEIGHTS:
            parametrize.register_parametrization(module, name, Int4Grid())
            count += 1
    if not count:
        raise ValueError("no routed experts found to train for int4")
    return count


def detach(model: nn.Module) -> None:
    """Undo ``attach``: the float weights (the same Parameter objects) back in place.

    Copy a model only detached: a parametrized module's class is made for it and a deep copy shares
    it, so removing the copy's parametrizations would remove the original's too.
    """
    for module in expert_modules(model):
        for name in EXPERT_WEIGHTS:
            if parametrize.is_parametrized(module, name):
                parametrize.remove_parametrizations(module, name, leave_parametrized=False)


@torch.no_grad()
def store_snapped(model: nn.Module) -> None:
    """Detach, then replace each routed expert weight by its exact grid values, in place."""
    detach(model)
    for module in expert_modules(model):
        for name in EXPERT_WEIGHTS:
            weight = getattr(module, name)
            weight.copy_(snap(weight).to(weight.dtype))
