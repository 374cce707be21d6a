"""DeepSeek's release layout of V4 weights: its tensor names and its FP8 / FP4 storage.

Names. The release calls tensors ``layers.3.attn.wq_a.weight``, ``layers.3.ffn.experts.7.w1.weight``,
``layers.3.hc_attn_fn``, ``layers.3.attn.attn_sink``...; transformers renames them on load (the
``deepseek_v4`` entry of ``transformers/conversion_mapping.py``) to the names
``DeepseekV4ForCausalLM.state_dict()`` has, which is what the rest of Enclave uses. Transformers'
``save_pretrained`` writes a hybrid (release-style leaves under a ``model.`` prefix, per-expert
tensors); checkpoints written from a ``state_dict`` use the final names. :func:`canonical_name`
maps all three to the final names; it is idempotent on final names, so one rule set serves every
layout.

Storage. Dense weights are FP8 e4m3 with one scale per 128x128 block (``weight_scale_inv``, named
``scale`` by DeepSeek's own tools; float32 or UE8M0). Routed experts are FP4 e2m1, two values per
int8 byte (low nibble first) with one scale per row for every 32 inputs (UE8M0 or float32) —
``transformers/integrations/finegrained_fp8.py`` (``Fp8Dequantize``) reads exactly these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from shared.errors import ModelError

from .safetensors_io import FP8_E4M3_BYTES, byte_table, decode_bytes, ue8m0_to_f32

__all__ = [
    "EXPERT_RE",
    "FP4_E2M1",
    "FP4_GROUP",
    "SCALE_SUFFIXES",
    "Fp8",
    "Mxfp4",
    "canonical_name",
    "decode_scale",
    "dequantize_fp4",
    "dequantize_fp8",
    "is_ignored",
]

# Same order as transformers' list: later rules see the output of earlier ones.
_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\.attn\.", ".self_attn."),
        (r"\.ffn\.", ".mlp."),
        (r"\.indexer\.compressor\.", ".compressor.indexer."),
        (r"^embed\.weight", "embed_tokens.weight"),
        (r"^head\.weight", "lm_head.weight"),
        (r"^hc_head_fn", "hc_head.hc_fn"),
        (r"^hc_head_base", "hc_head.hc_base"),
        (r"^hc_head_scale", "hc_head.hc_scale"),
        (r"\.attn_norm\.", ".input_layernorm."),
        (r"\.ffn_norm\.", ".post_attention_layernorm."),
        (r"\.hc_attn_fn", ".attn_hc.fn"),
        (r"\.hc_attn_base", ".attn_hc.base"),
        (r"\.hc_attn_scale", ".attn_hc.scale"),
        (r"\.hc_ffn_fn", ".ffn_hc.fn"),
        (r"\.hc_ffn_base", ".ffn_hc.base"),
        (r"\.hc_ffn_scale", ".ffn_hc.scale"),
        (r"\.attn_sink", ".sinks"),
        (r"\.indexer\.weights_proj\.", ".compressor.indexer.scorer.weights_proj."),
        (r"\.indexer\.wq_b\.", ".compressor.indexer.q_b_proj."),
        (r"\.norm\.", ".kv_norm."),
        (r"\.ape", ".position_bias"),
        (r"\.wq_a\.", ".q_a_proj."),
        (r"\.self_attn\.wq_b\.", ".self_attn.q_b_proj."),
        (r"\.wkv\.", ".kv_proj."),
        (r"\.wgate\.", ".gate_proj."),
        (r"\.wo_a\.", ".o_a_proj."),
        (r"\.wo_b\.", ".o_b_proj."),
        (r"\.q_norm\.", ".q_a_norm."),
        (r"\.gate\.bias", ".gate.e_score_correction_bias"),
        (r"\.shared_experts\.w1\.", ".shared_experts.gate_proj."),
        (r"\.shared_experts\.w2\.", ".shared_experts.down_proj."),
        (r"\.shared_experts\.w3\.", ".shared_experts.up_proj."),
    )
)

# A per-expert release tensor, after renaming: layer, expert, w1 (gate) | w2 (down) | w3 (up).
EXPERT_RE = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(w[123])\.weight$")

SCALE_SUFFIXES = (".weight_scale_inv", ".scale")
FP4_GROUP = 32  # inputs per FP4 scale
FP4_E2M1 = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32
)
_BYTES = np.arange(256)
_FP4_BYTES = byte_table(np.stack([FP4_E2M1[_BYTES & 0xF], FP4_E2M1[_BYTES >> 4]], axis=1))


def is_ignored(key: str) -> bool:
    """Multi-token-prediction layers ship with the release but are not part of the served model."""
    return key.startswith(("mtp.", "model.mtp."))


def canonical_name(key: str) -> str:
    """The ``state_dict`` name for a checkpoint key in any of the three layouts."""
    name = key.removeprefix("model.")
    for pattern, replacement in _RENAMES:
        name = pattern.sub(replacement, name)
    return name if name == "lm_head.weight" else f"model.{name}"


def decode_scale(raw: np.ndarray, dtype: str, what: str) -> np.ndarray:
    """A stored scale tensor (float32, bf16 bits, or UE8M0 bytes) as float32."""
    if dtype == "F32":
        return np.asarray(raw, dtype=np.float32)
    if dtype in ("F8_E8M0", "U8"):
        return ue8m0_to_f32(raw)
    if dtype == "BF16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    raise ModelError(f"{what}: unsupported scale dtype {dtype}")


def dequantize_fp8(
    raw: np.ndarray, scale: np.ndarray, block: tuple[int, int], what: str, out: np.ndarray | None = None
) -> np.ndarray:
    """FP8 e4m3 bytes ``(..., N, K)`` times one scale per ``block`` tile (edge tiles may be partial),
    into ``out`` when given (a contiguous float32 array of ``raw``'s shape)."""
    rows, cols = raw.shape[-2:]
    bm, bn = block
    want = (*raw.shape[:-2], -(-rows // bm), -(-cols // bn))
    if scale.shape != want:
        raise ModelError(
            f"{what}: FP8 scale has shape {tuple(scale.shape)}, expected {want} for {bm}x{bn} blocks"
        )
    values = decode_bytes(raw, FP8_E4M3_BYTES, np.dtype(np.float32), out)
    if rows % bm == 0 and cols % bn == 0:
        # Broadcast each scale over its tile in place: no second weight-sized array.
        tiles = values.reshape(*raw.shape[:-2], rows // bm, bm, cols // bn, bn)
        tiles *= scale[..., :, None, :, None]
    else:
        values *= np.repeat(np.repeat(scale, bm, axis=-2), bn, axis=-1)[..., :rows, :cols]
    return values


def dequantize_fp4(
    packed: np.ndarray, scale: np.ndarray, what: str, out: np.ndarray | None = None
) -> np.ndarray:
    """FP4 e2m1 pairs ``(..., N, K/2)`` (low nibble = even column) times one scale per 32 inputs
    (into ``out`` when given: a contiguous float32 array of the result's shape)."""
    rows, half = packed.shape[-2:]
    cols = 2 * half
    want = (*packed.shape[:-2], rows, -(-cols // FP4_GROUP))
    if scale.shape != want:
        raise ModelError(f"{what}: FP4 scale has shape {tuple(scale.shape)}, expected {want}")
    values = decode_bytes(packed, _FP4_BYTES, np.dtype(np.float32), out)
    if cols % FP4_GROUP == 0:
        groups = values.reshape(*values.shape[:-1], cols // FP4_GROUP, FP4_GROUP)
        groups *= scale[..., None]
    else:
        values *= np.repeat(scale, FP4_GROUP, axis=-1)[..., :cols]
    return values


@dataclass(frozen=True)
class Fp8:
    """A weight ``[N, K]`` as the release stores a dense projection: e4m3 codes and one scale per
    ``block`` tile. An 8-bit quantizer maps the codes by table (quant.py); :meth:`dequantize` is the
    float32 weight."""

    codes: np.ndarray  # uint8 [N, K]
    scale: np.ndarray  # float32 [ceil(N/bm), ceil(K/bn)]
    block: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.codes.shape[0]), int(self.codes.shape[1])

    def dequantize(self) -> np.ndarray:
        return dequantize_fp8(self.codes, self.scale, self.block, "FP8 weight")


@dataclass(frozen=True)
class Mxfp4:
    """A weight ``[N, K]`` as the release stores a routed expert, times ``factor``: e2m1 codes two per
    byte (low nibble = even column) and one scale per ``FP4_GROUP`` inputs. An integer quantizer
    maps the codes straight to its levels (quant.py); :meth:`dequantize` is the float32 weight.

    ``weight * factor`` scales it (as the MoE builder folds the routed scaling factor into the down
    projections) and :meth:`take_rows` reorders its rows, both without touching a value.
    """

    codes: np.ndarray  # uint8 [N, K/2]
    scale: np.ndarray  # float32 [N, ceil(K/32)]
    factor: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.codes.shape[0]), 2 * int(self.codes.shape[1])

    def __mul__(self, factor: float) -> Mxfp4:
        return replace(self, factor=self.factor * float(factor))

    def take_rows(self, order: np.ndarray) -> Mxfp4:
        return replace(self, codes=self.codes[order], scale=self.scale[order])

    def dequantize(self) -> np.ndarray:
        values = dequantize_fp4(self.codes, self.scale, "FP4 weight")
        if self.factor != 1.0:
            values *= np.float32(self.factor)
        return values
