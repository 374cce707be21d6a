"""How many tokens one prefill call may take: the largest chunk whose activations fit a budget.

A prefill call of ``T`` tokens holds, besides the weights and the cache state (both fixed), the
activations of one layer at a time plus the residual streams. What dominates them, per layer kind
(``W`` the window, ``C`` a compressed cache's capacity at the runner's context, ``H`` heads of ``d``):

    attention  3 x T x H x (W + T + far keys + 1) floats   scores, masked scores, probabilities
               CSA also: 2 x T x Hi x C floats (the indexer's scores) and T x top-k x d gathered keys
    MoE        fused (ort, QMoE): T x k x (3 x expert width + hidden) floats of activations
               portable: T x k x 3 x expert width x hidden weights — each token's chosen experts'
               matrices, gathered (a V4-Flash layer: ~300 MiB a token in fp16)

:func:`prefill_bytes` adds these up as an upper estimate, counting every float as float32 (the
fp16 graphs score attention in float32 where it matters and ONNX Runtime's kernels widen inside);
:func:`prefill_chunk` is the largest ``T`` whose estimate fits. ``tests/appliance/model/
test_flash_dims.py`` holds the estimate above the peak it measures at V4-Flash dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appliance.model.config import CSA, HCA, V4Config

__all__ = ["DEFAULT_PREFILL_MEMORY", "prefill_bytes", "prefill_chunk", "prefill_chunk_for_bundle"]

DEFAULT_PREFILL_MEMORY = 4 << 30  # bytes of activations a prefill call may hold
_F32 = 4
_ACT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


def prefill_bytes(
    config: V4Config, *, tokens: int, context: int, dtype: str = "fp32", moe: str = "ort", quant: str = "none"
) -> int:
    """Upper estimate of the activation bytes a prefill call of ``tokens`` tokens holds at its peak,
    with compressed caches sized for ``context`` tokens (the runner's ``max_context``)."""
    c, t = config, tokens
    streams = 4 * t * c.hc_mult * c.hidden_size * _F32  # in, mixed, out, residual
    logits = c.vocab_size * _F32  # the last token's only
    layer = max(
        max(_attention(c, i, t, context), _mlp(c, t, _ACT_BYTES[dtype], moe, quant))
        for i in range(c.num_hidden_layers)
    )
    return streams + layer + logits


def prefill_chunk(
    config: V4Config,
    *,
    budget: int,
    context: int,
    dtype: str = "fp32",
    moe: str = "ort",
    quant: str = "none",
) -> int:
    """The largest chunk (1..``context``) whose :func:`prefill_bytes` is at most ``budget``; 1 when
    none fits (a one-token call is a decode step's size, which the runner must run anyway)."""

    def fits(t: int) -> bool:
        return prefill_bytes(config, tokens=t, context=context, dtype=dtype, moe=moe, quant=quant) <= budget

    lo, hi = 1, max(1, context)
    if fits(hi):
        return hi
    while hi - lo > 1:  # fits(lo) or lo == 1; not fits(hi): the estimate grows with T
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def prefill_chunk_for_bundle(info: Mapping[str, Any], config: V4Config, *, budget: int, context: int) -> int:
    """:func:`prefill_chunk` for a bundle's bundle.json (``info``); one that names no ``moe`` path is
    sized for the portable one, which needs the most."""
    return prefill_chunk(
        config,
        budget=budget,
        context=context,
        dtype=str(info.get("dtype", "fp32")),
        moe=str(info.get("moe", "portable")),
        quant=str(info.get("quant", "none")),
    )


def _attention(c: V4Config, layer: int, t: int, context: int) -> int:
    kind, h, d = c.layer_types[layer], c.num_attention_heads, c.head_dim
    q = 3 * t * h * d * _F32  # q, rotated q, the attention output
    far, extra = 0, 0
    if kind in (CSA, HCA):
        capacity = context // c.compress_rate(layer) + 1
        far = capacity
        if kind == CSA:
            far = min(c.index_topk, capacity)
            index_q = 2 * t * c.index_n_heads * c.index_head_dim * _F32
            index_scores = 2 * t * c.index_n_heads * capacity * _F32
            extra = index_q + index_scores + 2 * t * far * d * _F32  # the picked entries, gathered
    scores = 3 * t * h * (c.sliding_window + t + far + 1) * _F32
    return q + scores + extra


def _mlp(c: V4Config, t: int, act: int, moe: str, quant: str) -> int:
    k, e, width, dim = c.num_experts_per_tok, c.n_routed_experts, c.moe_intermediate_size, c.hidden_size
    router = 3 * t * e * _F32
    shared = 3 * t * 2 * width * _F32 * max(1, c.n_shared_experts)
    if quant == "none" and moe == "portable":
        # The gathered matrices, and a tenth on top: measured at V4-Flash's dimensions (fp32, T = 8
        # and 16, bench/prefill_memory.py) the call held 3-4% more than the matrices alone.
        routed = t * k * (3 * width * dim * act * 11 // 10 + 3 * 2 * width * _F32)
    else:
        routed = t * k * (3 * width + dim) * _F32
    return router + shared + routed
