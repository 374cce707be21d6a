"""Test helper: write a transformers V4 model's weights the way DeepSeek's release stores them.

Inverse renaming (state_dict names -> release names), experts split one file entry per expert
and projection, dense matrices quantized to FP8 e4m3 with per-block scales, routed experts to FP4
e2m1 pairs with a scale per 32 inputs (UE8M0 or float32), sharded with an index file. Torch is
allowed here (tests only).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from appliance.model.safetensors_io import save_file

__all__ = [
    "TINY_CONFIG",
    "make_reference",
    "quantize_fp4",
    "quantize_fp8",
    "release_name",
    "write_release",
    "write_stacked",
]

# Small enough to build in well under a second; covers sliding, CSA and HCA layers, both MoE kinds
# and hc_mult > 1.
TINY_CONFIG: dict[str, Any] = {
    "vocab_size": 96,
    "hidden_size": 64,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "head_dim": 32,
    "q_lora_rank": 32,
    "num_experts_per_tok": 2,
    "n_routed_experts": 4,
    "o_groups": 2,
    "o_lora_rank": 16,
    "index_n_heads": 2,
    "index_head_dim": 16,
    "index_topk": 2,
    "sliding_window": 8,
    "hc_mult": 2,
    "layer_types": ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"],
    "mlp_layer_types": ["hash_moe", "moe", "moe"],
    "compress_rates": {"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
    "partial_rotary_factor": 0.5,
}

_INVERSE: tuple[tuple[str, str], ...] = (
    (r"\.self_attn\.compressor\.indexer\.scorer\.weights_proj\.", ".attn.indexer.weights_proj."),
    (r"\.self_attn\.compressor\.indexer\.q_b_proj\.", ".attn.indexer.wq_b."),
    (r"\.self_attn\.compressor\.indexer\.", ".attn.indexer.compressor."),
    (r"\.self_attn\.", ".attn."),
    (r"\.mlp\.", ".ffn."),
    (r"\.input_layernorm\.", ".attn_norm."),
    (r"\.post_attention_layernorm\.", ".ffn_norm."),
    (r"\.attn_hc\.(fn|base|scale)$", r".hc_attn_\1"),
    (r"\.ffn_hc\.(fn|base|scale)$", r".hc_ffn_\1"),
    (r"\.sinks$", ".attn_sink"),
    (r"\.kv_norm\.", ".norm."),
    (r"\.position_bias$", ".ape"),
    (r"\.shared_experts\.gate_proj\.", ".shared_experts.w1."),
    (r"\.shared_experts\.down_proj\.", ".shared_experts.w2."),
    (r"\.shared_experts\.up_proj\.", ".shared_experts.w3."),
    (r"\.q_a_proj\.", ".wq_a."),
    (r"\.q_b_proj\.", ".wq_b."),
    (r"\.kv_proj\.", ".wkv."),
    (r"\.gate_proj\.", ".wgate."),
    (r"\.o_a_proj\.", ".wo_a."),
    (r"\.o_b_proj\.", ".wo_b."),
    (r"\.q_a_norm\.", ".q_norm."),
    (r"\.gate\.e_score_correction_bias$", ".gate.bias"),
)
_TOP = {
    "lm_head.weight": "head.weight",
    "model.embed_tokens.weight": "embed.weight",
    "model.hc_head.hc_fn": "hc_head_fn",
    "model.hc_head.hc_base": "hc_head_base",
    "model.hc_head.hc_scale": "hc_head_scale",
    "model.norm.weight": "norm.weight",
}


def release_name(name: str) -> str:
    """The release name of a (non-expert) state_dict tensor."""
    if name in _TOP:
        return _TOP[name]
    out = name.removeprefix("model.")
    for pattern, replacement in _INVERSE:
        out = re.sub(pattern, replacement, out)
    return out


def make_reference(overrides: Mapping[str, Any] | None = None, seed: int = 0) -> Any:
    """A random-weight ``DeepseekV4ForCausalLM`` (eval mode) with non-trivial small parameters."""
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

    config = DeepseekV4Config(**{**TINY_CONFIG, **(overrides or {})})
    torch.manual_seed(seed)
    model = DeepseekV4ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dtype.is_floating_point and param.ndim >= 1 and not name.endswith("norm.weight"):
                param.normal_(0.0, 0.1)
        for name, buf in model.named_buffers():
            if name.endswith("tid2eid"):
                buf.copy_(torch.randint(0, config.n_routed_experts, buf.shape))
            elif name.endswith("e_score_correction_bias"):
                buf.normal_(0.0, 0.1)
    return model


def _ue8m0(scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round scales up to powers of two; return (float32 scale, stored byte)."""
    exp = np.ceil(np.log2(np.maximum(scale, np.finfo(np.float32).tiny))).astype(np.int32)
    return np.ldexp(np.float32(1.0), exp).astype(np.float32), (exp + 127).astype(np.uint8)


def quantize_fp8(w: np.ndarray, block: tuple[int, int], ue8m0: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """FP8 e4m3 bytes and per-block scales (``weight_scale_inv``), as transformers' Fp8Quantize does."""
    rows, cols = w.shape
    bm, bn = block
    sr, sc = -(-rows // bm), -(-cols // bn)
    padded = np.zeros((sr * bm, sc * bn), dtype=np.float32)
    padded[:rows, :cols] = w
    amax = np.abs(padded.reshape(sr, bm, sc, bn)).max(axis=(1, 3))
    scale = np.where(amax > 0, amax / 448.0, 1.0).astype(np.float32)
    stored: np.ndarray = scale
    code = "F32"
    if ue8m0:
        scale, stored = _ue8m0(scale)
        code = "F8_E8M0"
    expanded = np.repeat(np.repeat(scale, bm, axis=0), bn, axis=1)[:rows, :cols]
    q = torch.from_numpy(np.clip(w / expanded, -448, 448).astype(np.float32)).to(torch.float8_e4m3fn)
    return q.view(torch.uint8).numpy(), stored, code


_E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], np.float32)


def quantize_fp4(w: np.ndarray, ue8m0: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """FP4 e2m1 nibbles packed two per int8 (low = even column), one scale per row per 32 inputs."""
    rows, cols = w.shape
    groups = w.reshape(rows, cols // 32, 32)
    amax = np.abs(groups).max(axis=-1)
    scale = np.where(amax > 0, amax / 6.0, 1.0).astype(np.float32)
    stored: np.ndarray = scale
    code = "F32"
    if ue8m0:
        scale, stored = _ue8m0(scale)
        code = "F8_E8M0"
    scaled = (groups / scale[..., None]).reshape(rows, cols)
    nibbles = np.abs(scaled[..., None] - _E2M1).argmin(axis=-1).astype(np.uint8)
    packed = (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).astype(np.uint8).view(np.int8)
    return packed, stored, code


def _is_fp8_candidate(name: str, value: np.ndarray) -> bool:
    # The release keeps embeddings, head, router, norms, hyper-connection and compressor biases in
    # high precision; the dense projections are FP8.
    return value.ndim == 2 and name.endswith(".weight") and "norm" not in name and not name.endswith(
        ("embed_tokens.weight", "lm_head.weight", "gate.weight")
    )


def write_release(
    model: Any,
    out: Path,
    *,
    quantize: bool = True,
    ue8m0: bool = True,
    block: tuple[int, int] = (128, 128),
    shards: int = 2,
    with_mtp: bool = True,
    tokenizer_src: Path | None = None,
    fp4_dtype: str = "I8",
    scale_suffix: str = ".weight_scale_inv",
) -> dict[str, np.ndarray]:
    """Write ``model`` in the release layout; returns the stored tensors (name -> array) written.

    ``fp4_dtype`` is how packed experts are typed in the file: "I8" (DeepSeek's files) or "F4"
    (safetensors' own two-values-per-byte type, whose header shape counts values). Scales are
    ``<name>.weight_scale_inv`` as in DeepSeek's Hugging Face releases (``scale_suffix=".scale"``:
    the name DeepSeek's own inference code uses)."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    entries: list[tuple[str, np.ndarray, str]] = []

    def add_weight(name: str, w: np.ndarray, fp4: bool) -> None:
        if not quantize:
            entries.append((name, w.astype(np.float32), "F32"))
            return
        base = name.removesuffix(".weight")
        q, s, code = quantize_fp4(w, ue8m0) if fp4 else quantize_fp8(w, block, ue8m0)
        entries.append((name, q, fp4_dtype if fp4 else "F8_E4M3"))
        entries.append((base + scale_suffix, s, code))

    for name, value in state.items():
        match = re.match(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$", name)
        if match:
            layer, kind = match.groups()
            for e in range(value.shape[0]):
                prefix = f"layers.{layer}.ffn.experts.{e}."
                if kind == "gate_up_proj":
                    half = value.shape[1] // 2
                    add_weight(prefix + "w1.weight", value[e, :half], True)
                    add_weight(prefix + "w3.weight", value[e, half:], True)
                else:
                    add_weight(prefix + "w2.weight", value[e], True)
            continue
        target = release_name(name)
        if value.dtype == np.int64:
            entries.append((target, value, "I64"))
        elif _is_fp8_candidate(name, value):
            add_weight(target, value, False)
        else:
            entries.append((target, value.astype(np.float32), "F32"))
    if with_mtp:
        entries.append(("mtp.0.norm.weight", np.ones(model.config.hidden_size, np.float32), "F32"))

    weight_map: dict[str, str] = {}
    per = -(-len(entries) // shards)
    for i in range(shards):
        part = entries[i * per : (i + 1) * per]
        filename = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file(out / filename, part)
        weight_map.update({n: filename for n, _, _ in part})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    config = model.config.to_dict()
    if quantize:
        config["quantization_config"] = {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "scale_fmt": "ue8m0" if ue8m0 else "float",
            "weight_block_size": list(block),
            "activation_scheme": "dynamic",
            "expert_dtype": "fp4",
        }
    (out / "config.json").write_text(json.dumps(config, indent=1))
    _write_tokenizer(out, model.config.vocab_size, tokenizer_src)
    return {n: a for n, a, _ in entries}


def write_stacked(model: Any, out: Path, *, tokenizer_src: Path | None = None) -> None:
    """The state_dict names as they are (stacked experts), one file: what a plain export writes."""
    out.mkdir(parents=True, exist_ok=True)
    save_file(out / "model.safetensors", {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    (out / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1))
    _write_tokenizer(out, model.config.vocab_size, tokenizer_src)


def _write_tokenizer(out: Path, vocab_size: int, source: Path | None) -> None:
    if source is not None:
        (out / "tokenizer.json").write_bytes(source.read_bytes())
        return
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(out / "tokenizer.json"))
