"""The DeepSeek-V4 architecture config: a typed, frozen view of a checkpoint's ``config.json``.

``V4Config.from_dict`` accepts what transformers' ``DeepseekV4Config.save_pretrained`` writes and the
legacy keys DeepSeek's own release ships (``compress_ratios``, ``compress_rate_csa``/``_hca``,
``num_hash_layers``, ``qk_rope_head_dim``, a flat YaRN ``rope_scaling``/``rope_parameters``), folded the
way transformers folds them. Anything the graph builder cannot reproduce exactly raises
:class:`shared.errors.ModelError` naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.errors import ModelError

__all__ = ["ATTENTION_TYPES", "MLP_TYPES", "RopeSpec", "V4Config"]

SLIDING = "sliding_attention"
CSA = "compressed_sparse_attention"
HCA = "heavily_compressed_attention"
ATTENTION_TYPES = (SLIDING, CSA, HCA)
MLP_TYPES = ("hash_moe", "moe")
_RATIO_TO_TYPE = {0: SLIDING, 4: CSA, 128: HCA}
_DEFAULT_RATES = {CSA: 4, HCA: 128}
_SUPPORTED_SCORING = ("sqrtsoftplus", "sigmoid")


@dataclass(frozen=True)
class RopeSpec:
    """One rotary family ("main" for sliding layers, "compress" for CSA/HCA layers)."""

    rope_type: str  # "default" | "yarn"
    theta: float
    factor: float = 1.0
    original_max_position_embeddings: int = 0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float = 1.0

    def inv_freq(self, rope_dim: int) -> np.ndarray:
        """Inverse frequencies, one per interleaved pair (``rope_dim // 2``), as transformers computes them."""
        exponents = np.arange(0, rope_dim, 2, dtype=np.float32) / np.float32(rope_dim)
        pos_freqs = np.power(np.float32(self.theta), exponents).astype(np.float32)
        extrapolation = (np.float32(1.0) / pos_freqs).astype(np.float32)
        if self.rope_type == "default":
            return extrapolation
        interpolation = (np.float32(1.0) / (np.float32(self.factor) * pos_freqs)).astype(np.float32)

        def correction_dim(rotations: float) -> float:
            return (
                rope_dim * math.log(self.original_max_position_embeddings / (rotations * 2 * math.pi))
            ) / (2 * math.log(self.theta))

        # transformers reads `truncate` from the top-level rope dict, which V4 never sets: always truncated.
        low: float = max(math.floor(correction_dim(self.beta_fast)), 0)
        high: float = min(math.ceil(correction_dim(self.beta_slow)), rope_dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(rope_dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(
            np.float32
        )
        extrapolation_factor = np.float32(1.0) - ramp
        return (
            interpolation * (np.float32(1.0) - extrapolation_factor) + extrapolation * extrapolation_factor
        ).astype(np.float32)


@dataclass(frozen=True)
class V4Config:
    """The fields of transformers' ``DeepseekV4Config`` that define the computation."""

    vocab_size: int
    hidden_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    head_dim: int
    q_lora_rank: int
    num_experts_per_tok: int
    n_routed_experts: int
    n_shared_experts: int
    scoring_func: str
    routed_scaling_factor: float
    max_position_embeddings: int
    layer_types: tuple[str, ...]
    mlp_layer_types: tuple[str, ...]
    compress_rates: Mapping[str, int]
    hc_mult: int
    hc_sinkhorn_iters: int
    hc_eps: float
    swiglu_limit: float
    sliding_window: int
    o_groups: int
    o_lora_rank: int
    index_n_heads: int
    index_head_dim: int
    index_topk: int
    rms_norm_eps: float
    qk_rope_head_dim: int
    rope_main: RopeSpec
    rope_compress: RopeSpec
    num_key_value_heads: int = 1
    num_nextn_predict_layers: int = 0
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    # ---- derived -------------------------------------------------------------------------------
    def compress_rate(self, layer: int) -> int:
        """Source tokens per compressed entry on ``layer`` (0 for a sliding-only layer)."""
        kind = self.layer_types[layer]
        return 0 if kind == SLIDING else int(self.compress_rates[kind])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that ``from_dict`` reads back to an equal config (bundle.json's ``config``)."""

        def rope(spec: RopeSpec) -> dict[str, Any]:
            out: dict[str, Any] = {"rope_type": spec.rope_type, "rope_theta": spec.theta}
            if spec.rope_type == "yarn":
                out.update(
                    factor=spec.factor,
                    original_max_position_embeddings=spec.original_max_position_embeddings,
                    beta_fast=spec.beta_fast,
                    beta_slow=spec.beta_slow,
                )
            out["attention_factor"] = spec.attention_factor
            out["partial_rotary_factor"] = self.qk_rope_head_dim / self.head_dim
            return out

        return {
            "model_type": "deepseek_v4",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "moe_intermediate_size": self.moe_intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "q_lora_rank": self.q_lora_rank,
            "num_experts_per_tok": self.num_experts_per_tok,
            "n_routed_experts": self.n_routed_experts,
            "n_shared_experts": self.n_shared_experts,
            "scoring_func": self.scoring_func,
            "routed_scaling_factor": self.routed_scaling_factor,
            "max_position_embeddings": self.max_position_embeddings,
            "layer_types": list(self.layer_types),
            "mlp_layer_types": list(self.mlp_layer_types),
            "compress_rates": dict(self.compress_rates),
            "hc_mult": self.hc_mult,
            "hc_sinkhorn_iters": self.hc_sinkhorn_iters,
            "hc_eps": self.hc_eps,
            "swiglu_limit": self.swiglu_limit,
            "sliding_window": self.sliding_window,
            "o_groups": self.o_groups,
            "o_lora_rank": self.o_lora_rank,
            "index_n_heads": self.index_n_heads,
            "index_head_dim": self.index_head_dim,
            "index_topk": self.index_topk,
            "rms_norm_eps": self.rms_norm_eps,
            "partial_rotary_factor": self.qk_rope_head_dim / self.head_dim,
            "rope_parameters": {"main": rope(self.rope_main), "compress": rope(self.rope_compress)},
            "num_nextn_predict_layers": self.num_nextn_predict_layers,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id),
            "pad_token_id": self.pad_token_id,
        }

    # ---- parsing -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> V4Config:
        """Parse a ``config.json`` dict; a ModelError names the first unusable key."""
        if not isinstance(d, Mapping):
            raise ModelError("config.json: expected a JSON object")
        model_type = d.get("model_type")
        if model_type != "deepseek_v4":
            raise ModelError(f"config.json: model_type {model_type!r} is not supported (need 'deepseek_v4')")
        p = _Reader(d)
        n_layers = p.integer("num_hidden_layers", minimum=1)
        head_dim = p.integer("head_dim", default=512, minimum=2)

        rates = dict(_DEFAULT_RATES)
        raw_rates = d.get("compress_rates")
        if raw_rates is not None:
            if not isinstance(raw_rates, Mapping):
                raise ModelError("config.json: compress_rates must be an object")
            rates.update({str(k): v for k, v in raw_rates.items()})
        for legacy, kind in (("compress_rate_csa", CSA), ("compress_rate_hca", HCA)):
            if d.get(legacy) is not None:
                rates[kind] = d[legacy]
        for kind, rate in rates.items():
            if kind not in (CSA, HCA) or isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
                raise ModelError(
                    f"config.json: compress_rates[{kind!r}] = {rate!r} is not a positive integer"
                )

        layer_types = d.get("layer_types")
        if layer_types is None and d.get("compress_ratios") is not None:
            ratios = d["compress_ratios"]
            if not isinstance(ratios, list) or any(r not in _RATIO_TO_TYPE for r in ratios):
                raise ModelError(
                    f"config.json: compress_ratios must list values from {sorted(_RATIO_TO_TYPE)}"
                )
            layer_types = [_RATIO_TO_TYPE[r] for r in ratios]
        if layer_types is None:
            interleave = [CSA if i % 2 else HCA for i in range(max(n_layers - 2, 0))]
            layer_types = [HCA] * min(n_layers, 2) + interleave
        layer_types = _type_list("layer_types", layer_types, n_layers, ATTENTION_TYPES)

        mlp_types = d.get("mlp_layer_types")
        if mlp_types is None:
            n_hash = p.integer("num_hash_layers", default=3, minimum=0)
            mlp_types = ["hash_moe"] * min(n_layers, n_hash) + ["moe"] * max(0, n_layers - n_hash)
        mlp_types = _type_list("mlp_layer_types", mlp_types, n_layers, MLP_TYPES)

        if d.get("partial_rotary_factor") is not None:
            factor = p.number("partial_rotary_factor")
            rope_dim = int(head_dim * factor)
        else:
            rope_dim = p.integer("qk_rope_head_dim", default=64)
        if rope_dim <= 0 or rope_dim > head_dim or rope_dim % 2:
            raise ModelError(
                f"config.json: rotary dims {rope_dim} must be even and within head_dim {head_dim}"
            )

        rope_theta = p.number("rope_theta", default=10000.0)
        compress_theta = p.number("compress_rope_theta", default=160000.0)
        rope_main, rope_compress = _parse_rope(d, rope_theta, compress_theta)

        heads = p.integer("num_attention_heads", minimum=1)
        o_groups = p.integer("o_groups", default=8, minimum=1)
        if heads % o_groups:
            raise ModelError(f"config.json: o_groups {o_groups} must divide num_attention_heads {heads}")
        kv_heads = p.integer("num_key_value_heads", default=1)
        if kv_heads != 1:
            raise ModelError(
                f"config.json: num_key_value_heads {kv_heads} is not supported (V4 shares one KV head)"
            )
        shared = p.integer("n_shared_experts", default=1)
        if shared != 1:
            raise ModelError(f"config.json: n_shared_experts {shared} is not supported (need 1)")
        scoring = p.text("scoring_func", default="sqrtsoftplus")
        if scoring not in _SUPPORTED_SCORING:
            raise ModelError(
                f"config.json: scoring_func {scoring!r} is not supported ({', '.join(_SUPPORTED_SCORING)})"
            )
        act = p.text("hidden_act", default="silu")
        if act != "silu":
            raise ModelError(f"config.json: hidden_act {act!r} is not supported (need 'silu')")
        for flag in ("attention_bias", "mlp_bias"):
            if d.get(flag):
                raise ModelError(f"config.json: {flag} = true is not supported")
        n_experts = p.integer("n_routed_experts", default=256, minimum=1)
        top_k = p.integer("num_experts_per_tok", default=6, minimum=1)
        if top_k > n_experts:
            raise ModelError(f"config.json: num_experts_per_tok {top_k} exceeds n_routed_experts {n_experts}")

        eos = d.get("eos_token_id", 1)
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        if any(isinstance(e, bool) or not isinstance(e, int) for e in eos_ids):
            raise ModelError(f"config.json: eos_token_id {eos!r} must be an integer or a list of integers")

        known = set(cls.__dataclass_fields__) | _LEGACY_AND_IGNORED
        return cls(
            vocab_size=p.integer("vocab_size", minimum=1),
            hidden_size=p.integer("hidden_size", minimum=1),
            moe_intermediate_size=p.integer("moe_intermediate_size", minimum=1),
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            q_lora_rank=p.integer("q_lora_rank", default=1024, minimum=1),
            num_experts_per_tok=top_k,
            n_routed_experts=n_experts,
            n_shared_experts=shared,
            scoring_func=scoring,
            routed_scaling_factor=p.number("routed_scaling_factor", default=1.5),
            max_position_embeddings=p.integer("max_position_embeddings", default=1048576, minimum=1),
            layer_types=layer_types,
            mlp_layer_types=mlp_types,
            compress_rates=rates,
            hc_mult=p.integer("hc_mult", default=4, minimum=1),
            hc_sinkhorn_iters=p.integer("hc_sinkhorn_iters", default=20, minimum=1),
            hc_eps=p.number("hc_eps", default=1.0e-6),
            swiglu_limit=p.number("swiglu_limit", default=10.0),
            sliding_window=p.integer("sliding_window", default=128, minimum=1),
            o_groups=o_groups,
            o_lora_rank=p.integer("o_lora_rank", default=1024, minimum=1),
            index_n_heads=p.integer("index_n_heads", default=64, minimum=1),
            index_head_dim=p.integer("index_head_dim", default=128, minimum=2),
            index_topk=p.integer("index_topk", default=512, minimum=1),
            rms_norm_eps=p.number("rms_norm_eps", default=1.0e-6),
            qk_rope_head_dim=rope_dim,
            rope_main=rope_main,
            rope_compress=rope_compress,
            num_nextn_predict_layers=p.integer("num_nextn_predict_layers", default=0, minimum=0),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            bos_token_id=p.opt_integer("bos_token_id"),
            eos_token_id=eos_ids,
            pad_token_id=p.opt_integer("pad_token_id"),
            extra={k: v for k, v in d.items() if k not in known},
        )


_LEGACY_AND_IGNORED = {
    "model_type", "architectures", "compress_ratios", "compress_rate_csa", "compress_rate_hca",
    "num_hash_layers", "qk_rope_head_dim", "partial_rotary_factor", "rope_theta", "compress_rope_theta",
    "rope_parameters", "rope_scaling", "hidden_act", "attention_bias", "mlp_bias", "norm_topk_prob",
}  # fmt: skip


def _type_list(key: str, values: Any, n_layers: int, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(values, list | tuple):
        raise ModelError(f"config.json: {key} must be a list")
    if len(values) < n_layers:
        raise ModelError(f"config.json: {key} has {len(values)} entries for {n_layers} layers")
    bad = [v for v in values[:n_layers] if v not in allowed]
    if bad:
        raise ModelError(f"config.json: {key} entry {bad[0]!r} is not one of {', '.join(allowed)}")
    return tuple(values[:n_layers])


def _parse_rope(d: Mapping[str, Any], main_theta: float, compress_theta: float) -> tuple[RopeSpec, RopeSpec]:
    raw = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if not isinstance(raw, Mapping):
        raise ModelError("config.json: rope_parameters must be an object")
    if isinstance(raw.get("main"), Mapping) and isinstance(raw.get("compress"), Mapping):
        main_d, comp_d = raw["main"], raw["compress"]
    else:
        flat = {k: v for k, v in raw.items() if k not in ("main", "compress")}
        main_d = {"rope_type": "default", "rope_theta": main_theta}
        comp_d = {**flat, "rope_theta": compress_theta}
    return _rope_spec("main", main_d, main_theta), _rope_spec("compress", comp_d, compress_theta)


def _rope_spec(label: str, d: Mapping[str, Any], theta: float) -> RopeSpec:
    key = f"rope_parameters.{label}"
    kind = d.get("rope_type", d.get("type", "default"))
    try:
        base = float(d.get("rope_theta", theta))
        attention_factor = float(d.get("attention_factor", 1.0))
        if kind == "default":
            return RopeSpec("default", base, attention_factor=attention_factor)
        if kind == "yarn":
            return RopeSpec(
                "yarn",
                base,
                factor=float(d["factor"]),
                original_max_position_embeddings=int(d["original_max_position_embeddings"]),
                beta_fast=float(d.get("beta_fast") or 32),
                beta_slow=float(d.get("beta_slow") or 1),
                attention_factor=attention_factor,
            )
    except KeyError as exc:
        raise ModelError(f"config.json: {key} is missing {exc.args[0]!r}") from None
    except (TypeError, ValueError):
        raise ModelError(f"config.json: {key} has a non-numeric value") from None
    raise ModelError(f"config.json: {key}.rope_type {kind!r} is not supported (default, yarn)")


class _Reader:
    """Typed reads from the raw dict; every failure names its key."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        self._d = d

    def integer(self, key: str, default: int | None = None, minimum: int | None = None) -> int:
        value = self._d.get(key, default)
        if value is None:
            raise ModelError(f"config.json: missing key {key!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelError(f"config.json: {key} = {value!r} is not an integer")
        if minimum is not None and value < minimum:
            raise ModelError(f"config.json: {key} = {value} is below {minimum}")
        return value

    def opt_integer(self, key: str) -> int | None:
        value = self._d.get(key)
        return None if value is None else self.integer(key)

    def number(self, key: str, default: float | None = None) -> float:
        value = self._d.get(key, default)
        if value is None:
            raise ModelError(f"config.json: missing key {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ModelError(f"config.json: {key} = {value!r} is not a finite number")
        return float(value)

    def text(self, key: str, default: str) -> str:
        value = self._d.get(key, default)
        if not isinstance(value, str):
            raise ModelError(f"config.json: {key} = {value!r} is not a string")
        return value
