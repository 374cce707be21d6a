"""Open a V4 checkpoint directory — release layout or ``save_pretrained`` layout — as named float32 tensors.

    ckpt = open_checkpoint("DeepSeek-V4-Flash/")
    ckpt.config                  # V4Config
    ckpt.names()                 # DeepseekV4ForCausalLM.state_dict() names, in a stable order
    ckpt.tensor(name)            # float32 (int64 for the hash-routing table), dequantized
    ckpt.tensor_fp8(name)        # the same as stored, when that is FP8: codes and block scales
    ckpt.expert(name, e)         # one expert's slice of a stacked experts tensor, read alone
    ckpt.expert_mxfp4(name, e)   # the same as stored, when that is FP4: codes and scales (release.Mxfp4)
    ckpt.tokenizer_path

Everything is checked when the checkpoint is opened, before any weight is read: the config, the
tokenizer, every safetensors header, and the name, shape and scale of every tensor the
architecture needs (a missing, misshapen or unexpected tensor is a ModelError naming it). Tensors are
then read one at a time through memory maps, so peak memory is about one tensor (one expert, for
the stacked expert tensors when read with :meth:`Checkpoint.expert`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ModelError

from .config import CSA, HCA, V4Config
from .release import (
    EXPERT_RE,
    FP4_GROUP,
    SCALE_SUFFIXES,
    Fp8,
    Mxfp4,
    canonical_name,
    decode_scale,
    dequantize_fp4,
    dequantize_fp8,
    is_ignored,
)
from .safetensors_io import ShardedSafetensors, TensorInfo, bf16_to_f32

__all__ = ["Checkpoint", "expected_tensors", "open_checkpoint"]

_FLOAT_CODES = ("F32", "F16", "BF16", "F64")
_EXPERT_PARTS = {"gate_up_proj": ("w1", "w3"), "down_proj": ("w2",)}


def expected_tensors(config: V4Config) -> dict[str, tuple[int, ...]]:
    """Every tensor ``DeepseekV4ForCausalLM`` has for ``config``, with its shape, in state_dict order."""
    c = config
    h, d, q = c.hidden_size, c.head_dim, c.q_lora_rank
    mix = (2 + c.hc_mult) * c.hc_mult
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (c.vocab_size, h)}
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        out.update(
            {
                a + "sinks": (c.num_attention_heads,),
                a + "q_a_proj.weight": (q, h),
                a + "q_a_norm.weight": (q,),
                a + "q_b_proj.weight": (c.num_attention_heads * d, q),
                a + "kv_proj.weight": (d, h),
                a + "kv_norm.weight": (d,),
                a + "o_a_proj.weight": (c.o_groups * c.o_lora_rank, c.num_attention_heads * d // c.o_groups),
                a + "o_b_proj.weight": (h, c.o_groups * c.o_lora_rank),
            }
        )
        kind = c.layer_types[i]
        if kind in (CSA, HCA):
            m = c.compress_rates[kind]
            width = 2 * d if kind == CSA else d  # CSA keeps two overlapping series side by side
            cmp = a + "compressor."
            out.update(
                {
                    cmp + "position_bias": (m, width),
                    cmp + "kv_proj.weight": (width, h),
                    cmp + "gate_proj.weight": (width, h),
                    cmp + "kv_norm.weight": (d,),
                }
            )
            if kind == CSA:
                di, ix = c.index_head_dim, cmp + "indexer."
                out.update(
                    {
                        ix + "position_bias": (m, 2 * di),
                        ix + "kv_proj.weight": (2 * di, h),
                        ix + "gate_proj.weight": (2 * di, h),
                        ix + "kv_norm.weight": (di,),
                        ix + "q_b_proj.weight": (c.index_n_heads * di, q),
                        ix + "scorer.weights_proj.weight": (c.index_n_heads, h),
                    }
                )
        f, e, inter = p + "mlp.", c.n_routed_experts, c.moe_intermediate_size
        out[f + "gate.weight"] = (e, h)
        if c.mlp_layer_types[i] == "hash_moe":
            out[f + "gate.tid2eid"] = (c.vocab_size, c.num_experts_per_tok)
        else:
            out[f + "gate.e_score_correction_bias"] = (e,)
        out.update(
            {
                f + "experts.gate_up_proj": (e, 2 * inter, h),
                f + "experts.down_proj": (e, h, inter),
                f + "shared_experts.gate_proj.weight": (inter, h),
                f + "shared_experts.up_proj.weight": (inter, h),
                f + "shared_experts.down_proj.weight": (h, inter),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
            }
        )
        for hc in ("attn_hc.", "ffn_hc."):
            out.update({p + hc + "fn": (mix, c.hc_mult * h), p + hc + "base": (mix,), p + hc + "scale": (3,)})
    out.update(
        {
            "model.norm.weight": (h,),
            "model.hc_head.hc_fn": (c.hc_mult, c.hc_mult * h),
            "model.hc_head.hc_base": (c.hc_mult,),
            "model.hc_head.hc_scale": (1,),
            "lm_head.weight": (c.vocab_size, h),
        }
    )
    return out


@dataclass(frozen=True)
class _Source:
    """Where one stored tensor lives, and how to turn it into float32."""

    info: TensorInfo
    scale: TensorInfo | None


class Checkpoint:
    """A validated checkpoint; see the module docstring. Built by :func:`open_checkpoint`."""

    def __init__(
        self,
        *,
        path: Path,
        config: V4Config,
        raw_config: dict[str, Any],
        tokenizer_path: Path,
        files: ShardedSafetensors,
        plan: dict[str, tuple[int, ...]],
        direct: dict[str, _Source],
        experts: dict[str, list[list[_Source]]],
        fp8_block: tuple[int, int],
    ) -> None:
        self.path = path
        self.config = config
        self.raw_config = raw_config
        self.tokenizer_path = tokenizer_path
        self._files = files
        self._plan = plan
        self._direct = direct
        self._experts = experts
        self._fp8_block = fp8_block

    @property
    def layout(self) -> str:
        """``"release"`` when experts are stored one by one (DeepSeek's files, save_pretrained), else ``"stacked"``."""
        return "release" if self._experts else "stacked"

    def names(self) -> list[str]:
        return list(self._plan)

    def shape(self, name: str) -> tuple[int, ...]:
        try:
            return self._plan[name]
        except KeyError:
            raise ModelError(f"no tensor {name} in this architecture") from None

    def stored_bytes(self, name: str) -> int:
        """Bytes this tensor occupies in the checkpoint (weights and scales), for progress reporting."""
        self.shape(name)
        sources = (
            [self._direct[name]] if name in self._direct else [s for e in self._experts[name] for s in e]
        )
        return sum(s.info.nbytes + (s.scale.nbytes if s.scale else 0) for s in sources)

    @property
    def total_bytes(self) -> int:
        return sum(self.stored_bytes(n) for n in self._plan)

    def tensor(self, name: str) -> np.ndarray:
        """The whole tensor: float32 (dequantized), or int64 for ``gate.tid2eid``."""
        shape = self.shape(name)
        if name in self._direct:
            return self._read(self._direct[name], name)
        out = np.empty(shape, dtype=np.float32)
        for e in range(shape[0]):
            out[e] = self.expert(name, e)
        return out

    def tensor_fp8(self, name: str) -> Fp8 | None:
        """``tensor(name)`` as the release stores it, when that is FP8 e4m3 with block scales:
        codes and scales, nothing dequantized. None otherwise."""
        self.shape(name)
        source = self._direct.get(name)
        if source is None or source.scale is None or source.info.dtype != "F8_E4M3":
            return None
        scale = decode_scale(self._files.read(source.scale.name), source.scale.dtype, source.scale.name)
        return Fp8(self._files.read(source.info.name), scale, self._fp8_block)

    def expert(self, name: str, index: int) -> np.ndarray:
        """``tensor(name)[index]`` for a stacked experts tensor, reading only that expert."""
        shape = self.shape(name)
        if not 0 <= index < shape[0]:
            raise ModelError(f"{name}: expert {index} out of range 0..{shape[0] - 1}")
        if name in self._direct:
            # Sliced inside the map: only this expert's bytes are touched.
            return self._read(self._direct[name], name, index)
        sources = self._experts[name][index]
        if len(sources) == 1:
            return self._read(sources[0], f"{name}[{index}]")
        # gate and up decoded straight into their halves: no concatenated copy.
        out = np.empty(shape[1:], np.float32)
        start = 0
        for source in sources:
            rows = _stored_shape(source)[0]
            half = out[start : start + rows]
            got = self._read(source, f"{name}[{index}]", out=half)
            if got is not half:  # a float source, converted on its own
                half[...] = got
            start += rows
        return out

    def expert_mxfp4(self, name: str, index: int) -> Mxfp4 | None:
        """``expert(name, index)`` as the release stores it, when that is FP4 with a scale per 32
        inputs (every part: gate and up): codes and scales, nothing dequantized. None otherwise."""
        shape = self.shape(name)
        if not 0 <= index < shape[0]:
            raise ModelError(f"{name}: expert {index} out of range 0..{shape[0] - 1}")
        stacked = name in self._direct
        sources = [self._direct[name]] if stacked else self._experts[name][index]
        if any(s.scale is None or s.info.dtype == "F8_E4M3" for s in sources):
            return None
        codes, scales = [], []
        for source in sources:
            assert source.scale is not None
            scale = decode_scale(self._files.read(source.scale.name), source.scale.dtype, source.scale.name)
            scales.append(scale[index] if stacked else scale)
            codes.append(
                self._files.read(source.info.name, lambda v: (v[index] if stacked else v).view(np.uint8))
            )
        if len(codes) == 1:
            return Mxfp4(codes[0], scales[0])
        return Mxfp4(np.concatenate(codes), np.concatenate(scales))

    def _read(
        self, source: _Source, name: str, index: int | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """One stored tensor (or its expert ``index``) as float32; FP8 and FP4 sources are decoded
        into ``out`` when it is given (a contiguous array of their shape), others ignore it."""
        info = source.info

        def pick(v: np.ndarray) -> np.ndarray:
            return v if index is None else v[index]

        convert: Callable[[np.ndarray], np.ndarray]
        if source.scale is None and index is None and info.dtype == "F32":
            return self._files.read_whole(info.name)  # used as stored: read, not mapped
        if source.scale is None:
            if info.dtype in _FLOAT_CODES:
                convert = bf16_to_f32 if info.dtype == "BF16" else (lambda v: v.astype(np.float32))
            else:
                convert = lambda v: v.astype(np.int64)  # noqa: E731 - the hash-routing table
            return self._files.read(info.name, lambda v: convert(pick(v)))
        scale = pick(decode_scale(self._files.read(source.scale.name), source.scale.dtype, source.scale.name))
        if info.dtype == "F8_E4M3":
            block = self._fp8_block
            return self._files.read(info.name, lambda v: dequantize_fp8(pick(v), scale, block, name, out))
        return self._files.read(info.name, lambda v: dequantize_fp4(pick(v), scale, name, out))


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path.parent}: no {path.name}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path.name}: unreadable {what}: {exc}") from None
    if not isinstance(document, dict):
        raise ModelError(f"{path.name}: {what} is not a JSON object")
    return document


def _check_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer

    if not path.is_file():
        raise ModelError(f"{path.parent}: no tokenizer.json")
    try:
        Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises bare Exception subclasses for any bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"tokenizer.json: unreadable tokenizer: {reason}") from None


def _fp8_block(raw_config: dict[str, Any]) -> tuple[int, int]:
    qc = raw_config.get("quantization_config") or {}
    block = qc.get("weight_block_size", [128, 128]) if isinstance(qc, dict) else [128, 128]
    if not (isinstance(block, list) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block)):
        raise ModelError(
            f"config.json: quantization_config.weight_block_size {block!r} is not two positive integers"
        )
    return int(block[0]), int(block[1])


def _stored_shape(source: _Source) -> tuple[int, ...]:
    """The logical (dequantized) shape: FP4 stores two values per byte."""
    shape = source.info.shape
    if source.scale is not None and source.info.dtype in ("I8", "U8"):
        return (*shape[:-1], 2 * shape[-1])
    return shape  # F4's header shape already counts values


def _check_source(
    source: _Source, want: tuple[int, ...], name: str, is_index: bool, block: tuple[int, int]
) -> None:
    info = source.info
    if _stored_shape(source) != want:
        known_as = f" ({name})" if name != info.name else ""  # the file's name, then ours if it differs
        raise ModelError(
            f"tensor {info.name}{known_as} has shape {list(_stored_shape(source))}, expected {list(want)}"
        )
    if is_index:
        if info.dtype not in ("I64", "I32", "I16", "I8", "U8"):
            raise ModelError(f"tensor {info.name} ({name}) has dtype {info.dtype}, expected an integer type")
        return
    if source.scale is None and info.dtype not in _FLOAT_CODES:
        raise ModelError(f"tensor {info.name} ({name}) has dtype {info.dtype} and no scale tensor")
    if source.scale is not None and info.dtype not in ("F8_E4M3", "I8", "U8", "F4"):
        raise ModelError(
            f"tensor {info.name} ({name}) has a scale but dtype {info.dtype} (expected FP8 or packed FP4)"
        )
    if source.scale is not None:
        rows, cols = want[-2:]
        if info.dtype == "F8_E4M3":
            grid = (*want[:-2], -(-rows // block[0]), -(-cols // block[1]))
            what = f"{block[0]}x{block[1]} blocks"
        else:
            grid = (*want[:-2], rows, -(-cols // FP4_GROUP))
            what = f"one per row per {FP4_GROUP} inputs"
        if source.scale.shape != grid:
            raise ModelError(
                f"tensor {source.scale.name} has shape {list(source.scale.shape)}, expected {list(grid)} ({what})"
            )


_Slots = dict[str, list[list[_Source | None]]]


def _collect_sources(
    files: ShardedSafetensors, plan: dict[str, tuple[int, ...]]
) -> tuple[dict[str, _Source], _Slots]:
    """Stored tensors by final name, and per-expert tensors by the stacked tensor they form."""
    keys = [k for k in files.names() if not is_ignored(k)]
    stored = set(keys)
    scales: dict[str, str] = {}
    for key in keys:
        for suffix in SCALE_SUFFIXES:
            if key.endswith(suffix) and key[: -len(suffix)] + ".weight" in stored:
                scales[key[: -len(suffix)] + ".weight"] = key
    scale_keys = set(scales.values())
    by_name: dict[str, _Source] = {}
    experts: _Slots = {}
    for key in keys:
        if key in scale_keys:
            continue
        source = _Source(files.info(key), files.info(scales[key]) if key in scales else None)
        name = canonical_name(key)
        match = EXPERT_RE.match(name)
        if match:
            layer, index, part = match.groups()
            target = f"model.layers.{layer}.mlp.experts." + ("down_proj" if part == "w2" else "gate_up_proj")
            if target not in plan or int(index) >= plan[target][0]:
                raise ModelError(f"unexpected tensor {key} (not in this architecture)")
            slots = experts.setdefault(target, [[None, None] for _ in range(plan[target][0])])
            slots[int(index)][0 if part in ("w1", "w2") else 1] = source
            continue
        if name not in plan:
            raise ModelError(f"unexpected tensor {key} (not in this architecture)")
        if name in by_name:
            raise ModelError(f"tensors {by_name[name].info.name} and {key} are both {name}")
        by_name[name] = source
    return by_name, experts


def _resolve(
    plan: dict[str, tuple[int, ...]], by_name: dict[str, _Source], experts: _Slots, block: tuple[int, int]
) -> tuple[dict[str, _Source], dict[str, list[list[_Source]]]]:
    """Check every planned tensor is stored once, with the right shape and scales."""
    direct: dict[str, _Source] = {}
    stacked: dict[str, list[list[_Source]]] = {}
    for name, want in plan.items():
        if name in by_name and name in experts:
            raise ModelError(f"{name} is stored both stacked ({by_name[name].info.name}) and per expert")
        if name in by_name:
            _check_source(by_name[name], want, name, name.endswith("tid2eid"), block)
            direct[name] = by_name[name]
            continue
        if name not in experts:
            raise ModelError(f"missing tensor {name}")
        kind = name.rsplit(".", 1)[1]
        parts = _EXPERT_PARTS[kind]
        stacked[name] = []
        for index, slot in enumerate(experts[name]):
            sources: list[_Source] = []
            for part, maybe in zip(parts, slot[: len(parts)], strict=True):
                if maybe is None:
                    raise ModelError(f"missing tensor {name.replace('.' + kind, '')}.{index}.{part}.weight")
                _check_source(maybe, (want[1] // len(parts), want[2]), name, False, block)
                sources.append(maybe)
            stacked[name].append(sources)
    return direct, stacked


def open_checkpoint(path: Path | str) -> Checkpoint:
    """Open and validate a checkpoint directory (``config.json``, ``*.safetensors``, ``tokenizer.json``)."""
    root = Path(path)
    if not root.is_dir():
        raise ModelError(f"{root}: not a checkpoint directory")
    raw_config = _read_json(root / "config.json", "config")
    config = V4Config.from_dict(raw_config)
    tokenizer_path = root / "tokenizer.json"
    _check_tokenizer(tokenizer_path)
    files = ShardedSafetensors(root)
    plan = expected_tensors(config)
    fp8_block = _fp8_block(raw_config)
    direct, stacked = _resolve(plan, *_collect_sources(files, plan), fp8_block)
    return Checkpoint(
        path=root,
        config=config,
        raw_config=raw_config,
        tokenizer_path=tokenizer_path,
        files=files,
        plan=plan,
        direct=direct,
        experts=stacked,
        fp8_block=fp8_block,
    )
