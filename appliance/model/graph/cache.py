"""Cache indexing: which ring slot holds which position, which entries a query sees, where writes go.

Everything here is derived from the ``positions`` input (first new position per row) and the number
of new tokens ``T``, once per graph, and shared by every layer (see docs/bundle.md for the layout):

- window ring ``[B, W, D]``: position ``p`` lives in slot ``p % W``;
- compressor source ring ``[B, R, .]``: position ``p`` in slot ``p % R``;
- readers concatenate a ring, as it is, with this call's tokens (``[ring | new]``); the next ring is a
  Gather from that (``make_ring_keep``), the compressor's windows are Gathers from it too;
- compressed entries ``[B, C, .]``: entry ``w`` (source positions ``w*m .. w*m+m-1``) at index ``w``,
  visible to a query at ``t`` iff ``w < (t + 1) // m`` — all of its source tokens are ``<= t``.
"""

from __future__ import annotations

import numpy as np

from appliance.model.graph.rope import RopeBuilder

__all__ = ["CacheBuilder"]


class CacheBuilder(RopeBuilder):
    # Set by the model builder before any layer is made.
    positions: str  # [B] int64
    pos_bt: str  # [B, T] int64, positions[b] + t
    seq_len: str  # [] int64, T
    input_ids: str  # [B, T] int64, set by the model builder

    def i64(self, value: int | list[int]) -> str:
        return self.const(value, np.int64)

    def neg_inf(self) -> str:
        return self.const_act(-np.inf)

    def zero(self) -> str:
        return self.const_act(0.0)

    def make_row_index(self, key: str, index: str, width: int) -> str:
        """``[B, N]`` row indices broadcast to ``[B, N, width]`` for Gather/ScatterElements on axis 1.

        Shared by every layer that indexes the same rows at the same width.
        index ─ Unsqueeze ─ Expand[1, 1, width]
        """

        def make() -> str:
            path = f"/model/cache/{key}_x{width}"
            out = self.op("Unsqueeze", f"{path}/Unsqueeze", [index, self.i64([2])])
            return self.op("Expand", f"{path}/Expand", [out, self.i64([1, 1, width])])

        result: str = self.shared(("row_index", key, width), make)
        return result

    def make_window_mask(self) -> str:
        """Additive mask ``[B, T, 1, W + T]`` over [window ring | new tokens] (0 visible, -inf not).

        positions-1 ─ Sub(Mod(positions-1 - slot, W)) ─ ring key positions ─┐
                                                 pos_bt (new key positions) ─ Concat ─ kpos
        kpos <= q  And  kpos > q - W  And  kpos >= 0 ─ Where(0, -inf) ─ Unsqueeze
        """

        def make() -> str:
            w = self.config.sliding_window
            path = "/model/cache/window"
            last = self.op("Sub", f"{path}/last/Sub", [self.positions, self.i64(1)])
            last = self.op("Unsqueeze", f"{path}/last/Unsqueeze", [last, self.i64([1])])
            back = self.op("Sub", f"{path}/back/Sub", [last, self.const(np.arange(w), np.int64)])
            back = self.op("Mod", f"{path}/back/Mod", [back, self.i64(w)])
            ring_pos = self.op("Sub", f"{path}/ring_pos/Sub", [last, back])
            kpos = self.op("Concat", f"{path}/kpos/Concat", [ring_pos, self.pos_bt], axis=1)
            kpos = self.op("Unsqueeze", f"{path}/kpos/Unsqueeze", [kpos, self.i64([1])])
            q = self.op("Unsqueeze", f"{path}/q/Unsqueeze", [self.pos_bt, self.i64([2])])
            not_future = self.op("LessOrEqual", f"{path}/not_future/LessOrEqual", [kpos, q])
            lo = self.op("Sub", f"{path}/lo/Sub", [q, self.i64(w)])
            recent = self.op("Greater", f"{path}/recent/Greater", [kpos, lo])
            exists = self.op("GreaterOrEqual", f"{path}/exists/GreaterOrEqual", [kpos, self.i64(0)])
            visible = self.op("And", f"{path}/visible/And", [not_future, recent])
            visible = self.op("And", f"{path}/visible/And_1", [visible, exists])
            mask = self.op("Where", f"{path}/mask/Where", [visible, self.zero(), self.neg_inf()])
            return self.op("Unsqueeze", f"{path}/mask/Unsqueeze", [mask, self.i64([2])])

        result: str = self.shared("window_mask", make)
        return result

    def make_ring_keep(self, ring: int) -> str:
        """What a ring of ``ring`` slots holds after this call, as indices ``[B, ring]`` into
        ``[ring in slot order | this call's T tokens]``: slot ``s`` takes the newest token at a
        position ``= s (mod ring)`` — token ``t = T-1-d`` for ``d = (positions+T-1-s) % ring < T`` — or
        keeps what it held. A Gather of the Concat every reader builds anyway: no Slice/Scatter.

        positions+T-1 ─ Sub(arange(ring)) ─ Mod(ring) ─ d ─ Less(T) ─ Where(ring+T-1-d, slot)
        """

        def make() -> str:
            path = f"/model/cache/ring{ring}_keep"
            slot = self.const(np.arange(ring), np.int64)
            first = self.op("Unsqueeze", f"{path}/first/Unsqueeze", [self.positions, self.i64([1])])
            top = self.op("Add", f"{path}/top/Add", [self.seq_len, self.i64(-1)])
            last = self.op("Add", f"{path}/last/Add", [first, top])
            back = self.op("Sub", f"{path}/back/Sub", [last, slot])
            back = self.op("Mod", f"{path}/back/Mod", [back, self.i64(ring)])
            newer = self.op("Less", f"{path}/newer/Less", [back, self.seq_len])
            newest = self.op("Add", f"{path}/newest/Add", [top, self.i64(ring)])
            taken = self.op("Sub", f"{path}/taken/Sub", [newest, back])
            return self.op("Where", f"{path}/Where", [newer, taken, slot])

        result: str = self.shared(("ring_keep", ring), make)
        return result

    def make_entry_visibility(self, m: int, capacity: str) -> tuple[str, str]:
        """(bool ``[B, T, 1, C]``, additive ``[B, T, 1, C]``): entry ``w`` visible to the query at ``t``
        (the axis of 1 broadcasts over heads).

        (pos_bt + 1) // m ─ Unsqueeze ─ Greater(than arange(C)) ─ Where(0, -inf)
        """

        def make() -> tuple[str, str]:
            path = f"/model/cache/entries{m}"
            count = self.op("Add", f"{path}/count/Add", [self.pos_bt, self.i64(1)])
            count = self.op("Div", f"{path}/count/Div", [count, self.i64(m)])
            count = self.op("Unsqueeze", f"{path}/count/Unsqueeze", [count, self.i64([2, 3])])
            index = self.op("Range", f"{path}/index/Range", [self.i64(0), capacity, self.i64(1)])
            visible = self.op("Less", f"{path}/visible/Less", [index, count])
            additive = self.op("Where", f"{path}/mask/Where", [visible, self.zero(), self.neg_inf()])
            return visible, additive

        result: tuple[str, str] = self.shared(("entry_visibility", m), make)
        return result

    def make_candidate_windows(self, m: int) -> str:
        """Entries a call may complete: ``w_j = positions // m + j`` for ``j < T // m + 1``, ``[B, J]``.

        The last one may be incomplete; it is written to its own (not yet visible) index and rewritten
        when its window closes, which keeps every shape static for a given ``T``.
        """

        def make() -> str:
            path = f"/model/cache/windows{m}"
            count = self.op("Div", f"{path}/count/Div", [self.seq_len, self.i64(m)])
            count = self.op("Add", f"{path}/count/Add", [count, self.i64(1)])
            j = self.op("Range", f"{path}/Range", [self.i64(0), count, self.i64(1)])
            first = self.op("Div", f"{path}/first/Div", [self.positions, self.i64(m)])
            first = self.op("Unsqueeze", f"{path}/first/Unsqueeze", [first, self.i64([1])])
            return self.op("Add", f"{path}/Add", [first, j])

        result: str = self.shared(("windows", m), make)
        return result

    def make_window_sources(self, m: int, ring: int, span: int) -> str:
        """Where each candidate window's source tokens sit in ``[ring (slot order) | new tokens]``.

        For window ``w`` the ``span`` sources are positions ``w*m + span - m - ... ``: the window's own
        ``m`` tokens, preceded (``span = 2m``) by the previous window's. Returns ``[B, J, span]`` int64,
        clamped into range (sources past the new tokens belong to the incomplete last window). Counted
        oldest first, source ``i < ring`` is position ``positions - ring + i``, held in slot
        ``(positions + i) % ring``.

        w_j*m + offsets - positions + ring ─ Clip(0, ring + T - 1) ─ Where(< ring: slot of it)
        """

        def make() -> str:
            path = f"/model/cache/windows{m}_sources{span}"
            w = self.make_candidate_windows(m)
            start = self.op("Mul", f"{path}/start/Mul", [w, self.i64(m)])
            start = self.op("Unsqueeze", f"{path}/start/Unsqueeze", [start, self.i64([2])])
            offsets = np.arange(span, dtype=np.int64) - (span - m) + ring
            idx = self.op("Add", f"{path}/Add", [start, self.const(offsets, np.int64)])
            first = self.op("Unsqueeze", f"{path}/first/Unsqueeze", [self.positions, self.i64([1, 2])])
            idx = self.op("Sub", f"{path}/Sub", [idx, first])
            top = self.op("Add", f"{path}/top/Add", [self.seq_len, self.i64(ring - 1)])
            idx = self.op("Clip", f"{path}/Clip", [idx, self.i64(0), top])
            in_ring = self.op("Less", f"{path}/in_ring/Less", [idx, self.i64(ring)])
            slot = self.op("Add", f"{path}/slot/Add", [idx, first])
            slot = self.op("Mod", f"{path}/slot/Mod", [slot, self.i64(ring)])
            return self.op("Where", f"{path}/Where", [in_ring, slot, idx])

        result: str = self.shared(("window_sources", m, ring, span), make)
        return result

    def make_window_rows(self, m: int, ring: int) -> str:
        """An overlapping compressor's sources as rows ``[B, J*2m*2]`` of its ``[ring | new]`` tokens
        viewed as ``(token, kv|gate, A|B)`` rows of one channel width: the ``2m`` sources of window
        ``w`` read series A for the previous window's ``m`` tokens and B for its own, kv then gate.

        sources ─ Unsqueeze ─ Mul(4) ─ Add([[A or B, 2 + A or B] per source]) ─ Reshape[B, -1]
        """

        def make() -> str:
            path = f"/model/cache/windows{m}_rows"
            sources = self.make_window_sources(m, ring, 2 * m)
            series = (np.arange(2 * m) >= m).astype(np.int64)
            offsets = np.stack([series, 2 + series], axis=-1)  # [2m, (kv, gate)]
            rows = self.op("Unsqueeze", f"{path}/Unsqueeze", [sources, self.i64([3])])
            rows = self.op("Mul", f"{path}/Mul", [rows, self.i64(4)])
            rows = self.op("Add", f"{path}/Add", [rows, self.const(offsets, np.int64)])
            return self.op("Reshape", f"{path}/Reshape", [rows, self.i64([0, -1])])

        result: str = self.shared(("window_rows", m, ring), make)
        return result

    def make_first_window_mask(self, m: int) -> str:
        """Additive ``[B, J, 2m, 1, 1]``: -inf on the previous-window slots of entry 0 (there is none)."""

        def make() -> str:
            path = f"/model/cache/windows{m}_first"
            w = self.make_candidate_windows(m)
            is_first = self.op("Equal", f"{path}/Equal", [w, self.i64(0)])
            is_first = self.op("Unsqueeze", f"{path}/Unsqueeze", [is_first, self.i64([2, 3, 4])])
            prev_slot = np.zeros((2 * m, 1, 1), bool)
            prev_slot[:m] = True
            both = self.op("And", f"{path}/And", [is_first, self.const(prev_slot)])
            return self.op("Where", f"{path}/Where", [both, self.neg_inf(), self.zero()])

        result: str = self.shared(("first_window", m), make)
        return result
