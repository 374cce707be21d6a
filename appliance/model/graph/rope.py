"""Partial interleaved RoPE on the last ``rope_dim`` channels, as V4 applies it.

V4 rotates consecutive channel pairs ``(2i, 2i+1)`` of the trailing ``rope_dim`` channels of a head and
leaves the leading channels alone. One ``com.microsoft.RotaryEmbedding`` node (``interleaved=1``)
does it per use: its tables cover the whole head width, and the leading (non-rotated) pairs get angle
0 — ``cos = 1``, ``sin = 0``, so they pass through exactly (ORT's own partial rotary rotates the
*first* channels, which is not V4's layout).

The tables are computed once per graph for the positions at hand, one row per (row, token): the op's
``position_ids`` then just number those rows, ``[B, S]`` = ``0 .. B*S-1``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from onnx import TensorProto

from appliance.model.config import RopeSpec
from appliance.model.graph.builder import MS_DOMAIN, GraphBuilder

__all__ = ["RopeBuilder", "RopeTables"]


class RopeTables(NamedTuple):
    """What a RotaryEmbedding node reads besides its input: ids ``[B, S]``, cos/sin ``[B*S, width/2]``."""

    ids: str
    cos: str
    sin: str


class RopeBuilder(GraphBuilder):
    def rope_spec(self, kind: str) -> RopeSpec:
        return self.config.rope_main if kind == "main" else self.config.rope_compress

    def make_rope_tables(
        self,
        kind: str,
        positions: str,
        pos_key: str,
        width: int,
        *,
        inverse: bool = False,
        scaled: bool = True,
    ) -> RopeTables:
        """Tables for int64 ``positions [B, S]`` (memoised per graph): ``inverse`` negates the angle,
        ``scaled=False`` leaves out the attention factor (for a caller that folds it elsewhere).

        positions ─ Reshape[-1, 1] ─ Cast ─ Mul(inv_freq, 0 on unrotated pairs) ─┬─ Cos ─ (Mul factor) ─ cos
                                                                                  └─ Sin ─ (Mul ±factor) ─ sin
        """
        spec = self.rope_spec(kind)
        factor = spec.attention_factor if scaled else 1.0
        rd = self.config.qk_rope_head_dim
        half, rotated = width // 2, rd // 2

        def angles() -> str:
            inv = np.concatenate([np.zeros(half - rotated, np.float32), spec.inv_freq(rd)]).astype(np.float32)
            path = f"/model/rope/{kind}_{pos_key}_{width}"
            flat = self._rope_rows(positions, pos_key)
            pos_f = self.op("Cast", f"{path}/Cast", [flat], to=TensorProto.FLOAT)
            return self.op("Mul", f"{path}/Mul", [pos_f, self.const(inv)])

        def table(fn: str, sign: float) -> str:
            def make() -> str:
                path = f"/model/rope/{kind}_{pos_key}_{width}"
                angle = self.shared(("rope_angles", kind, pos_key, width), angles)
                value = self.shared(
                    ("rope_fn", fn, kind, pos_key, width),
                    lambda: self.op(fn, f"{path}/{fn}", [angle]),
                )
                scale = sign * factor
                label = f"{fn.lower()}_{'neg' if sign < 0 else 'pos'}_{factor:g}"
                if scale != 1.0:
                    per_pair = np.concatenate(
                        [np.ones(half - rotated, np.float32), np.full(rotated, scale, np.float32)]
                    )
                    value = self.op("Mul", f"{path}/{label}/Mul", [value, self.const(per_pair)])
                return self.to_act(f"{path}/{label}/Cast", value)

            result: str = self.shared(("rope_table", fn, sign * factor, kind, pos_key, width), make)
            return result

        return RopeTables(
            self._rope_ids(positions, pos_key), table("Cos", 1.0), table("Sin", -1.0 if inverse else 1.0)
        )

    def _rope_rows(self, positions: str, pos_key: str) -> str:
        """``positions`` as one column ``[B*S, 1]``: the tables' rows (once per position set)."""
        result: str = self.shared(
            ("rope_rows", pos_key),
            lambda: self.op(
                "Reshape", f"/model/rope/{pos_key}_rows/Reshape", [positions, self.const([-1, 1], np.int64)]
            ),
        )
        return result

    def _rope_ids(self, positions: str, pos_key: str) -> str:
        """``[B, S]`` = ``0 .. B*S-1``: each (row, token)'s row in the tables (once per position set)."""

        def make() -> str:
            path = f"/model/rope/{pos_key}_ids"
            shape = self.op("Shape", f"{path}/Shape", [positions])
            flat = self._rope_rows(positions, pos_key)
            count = self.op("Shape", f"{path}/count/Shape", [flat], start=0, end=1)
            count = self.op("Squeeze", f"{path}/count/Squeeze", [count, self.const([0], np.int64)])
            ids = self.op("Range", f"{path}/Range", [self.const(0, np.int64), count, self.const(1, np.int64)])
            return self.op("Reshape", f"{path}/ids/Reshape", [ids, shape])

        result: str = self.shared(("rope_ids", pos_key), make)
        return result

    def make_rope(self, path: str, x: str, tables: RopeTables, *, heads: int, width: int) -> str:
        """Rotate the trailing rope channels of every head of ``x [B, S, heads * width]``."""
        return self.op(
            "RotaryEmbedding",
            f"{path}/RotaryEmbedding",
            [x, tables.ids, tables.cos, tables.sin],
            domain=MS_DOMAIN,
            interleaved=1,
            num_heads=heads,
            rotary_embedding_dim=width,
        )
