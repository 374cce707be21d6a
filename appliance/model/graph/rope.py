"""Partial interleaved RoPE on the last ``rope_dim`` channels, as V4 applies it.

V4 rotates consecutive channel pairs ``(2i, 2i+1)`` of the trailing ``rope_dim`` channels of a head and
leaves the leading channels alone. The tables cover the whole head width: the leading (non-rotated)
channels get angle 0, so ``cos = 1`` and ``sin = 0`` there and no Split/Concat is needed per use.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from appliance.model.config import RopeSpec
from appliance.model.graph.builder import GraphBuilder

__all__ = ["RopeBuilder"]

_INT64_MAX = np.iinfo(np.int64).max


class RopeBuilder(GraphBuilder):
    def rope_spec(self, kind: str) -> RopeSpec:
        return self.config.rope_main if kind == "main" else self.config.rope_compress

    def make_rope_tables(self, kind: str, positions: str, pos_key: str, width: int) -> tuple[str, str]:
        """cos/sin tables ``[..., width]`` for int64 ``positions`` (memoised per graph).

        positions ─ Cast ─ Unsqueeze ─ Mul(inv_freq, 0 on unrotated channels) ─┬─ Cos ─ (Mul attn factor) ─ cos
                                                                                └─ Sin ─ (Mul attn factor) ─ sin
        """

        def make() -> tuple[str, str]:
            spec = self.rope_spec(kind)
            rd = self.config.qk_rope_head_dim
            inv = np.repeat(spec.inv_freq(rd), 2)
            inv_full = np.concatenate([np.zeros(width - rd, np.float32), inv]).astype(np.float32)
            path = f"/model/rope/{kind}_{pos_key}_{width}"
            pos_f = self.op("Cast", f"{path}/Cast", [positions], to=TensorProto.FLOAT)
            pos_f = self.op("Unsqueeze", f"{path}/Unsqueeze", [pos_f, self.const([-1], np.int64)])
            angles = self.op("Mul", f"{path}/Mul", [pos_f, self.const(inv_full)])
            cos = self.op("Cos", f"{path}/Cos", [angles])
            sin = self.op("Sin", f"{path}/Sin", [angles])
            if spec.attention_factor != 1.0:
                factor = np.concatenate(
                    [np.ones(width - rd, np.float32), np.full(rd, spec.attention_factor, np.float32)]
                )
                cos = self.op("Mul", f"{path}/cos_scale/Mul", [cos, self.const(factor)])
                sin = self.op("Mul", f"{path}/sin_scale/Mul", [sin, self.const(factor)])
            return self.to_act(f"{path}/cos/Cast", cos), self.to_act(f"{path}/sin/Cast", sin)

        result: tuple[str, str] = self.shared(("rope", kind, pos_key, width), make)
        return result

    def make_head_tables(self, kind: str, positions: str, pos_key: str, width: int) -> tuple[str, str]:
        """The same tables with a head axis, ``[B, T, 1, width]``, for ``[B, T, H, width]`` inputs."""

        def make() -> tuple[str, str]:
            cos, sin = self.make_rope_tables(kind, positions, pos_key, width)
            path = f"/model/rope/{kind}_{pos_key}_{width}_heads"
            axis = self.const([-2], np.int64)
            return (
                self.op("Unsqueeze", f"{path}/cos/Unsqueeze", [cos, axis]),
                self.op("Unsqueeze", f"{path}/sin/Unsqueeze", [sin, axis]),
            )

        result: tuple[str, str] = self.shared(("rope_heads", kind, pos_key, width), make)
        return result

    def make_rope(
        self, path: str, x: str, tables: tuple[str, str], width: int, *, inverse: bool = False
    ) -> str:
        """Rotate the trailing rope channels of ``x`` (``inverse``: by the negated angle).

        x ─┬──────────────────────────────────────── Mul(cos) ──┐
           └─ Slice[-rd:] ─ MatMul(pair swap, signed) ─ Mul(sin) ─ Add (Sub if inverse) ─ out
        """
        rd = self.config.qk_rope_head_dim
        swap = np.zeros((rd, width), np.float32)
        offset = width - rd
        for i in range(0, rd, 2):
            swap[i + 1, offset + i] = -1.0  # out[2i]   = x[2i] cos - x[2i+1] sin
            swap[i, offset + i + 1] = 1.0  # out[2i+1] = x[2i+1] cos + x[2i] sin
        cos, sin = tables
        tail = self.op(
            "Slice",
            f"{path}/rope/Slice",
            [x, self.const([-rd], np.int64), self.const([_INT64_MAX], np.int64), self.const([-1], np.int64)],
        )
        rotated = self.op("MatMul", f"{path}/rope/MatMul", [tail, self.const_tensor(swap)])
        straight = self.op("Mul", f"{path}/rope/cos/Mul", [x, cos])
        turned = self.op("Mul", f"{path}/rope/sin/Mul", [rotated, sin])
        return self.op(
            "Sub" if inverse else "Add", f"{path}/rope/{'Sub' if inverse else 'Add'}", [straight, turned]
        )
