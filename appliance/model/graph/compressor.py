"""CSA's and HCA's KV compressors and CSA's Lightning Indexer.

A compressor pools every ``m`` source tokens into one compressed KV entry with a learned, per-channel
softmax gate. HCA's windows do not overlap; CSA's (and its indexer's) carry two series per token: entry
``w`` pools the previous window's series A with window ``w``'s series B (width 2m, stride m). Both
read their sources from ``[ring of the last R projected tokens | this call's tokens]``, so prefill,
chunked prefill and decode run the same nodes.

Causality of the indexer. A query at position ``t`` may select only compressed entries whose source
tokens are all ``<= t`` (``w < (t + 1) // m``); future and unwritten entries score -inf before TopK,
and picks that still land on them (fewer visible entries than ``index_topk``) are dropped. Ties between
equal scores go to the lower entry index (ONNX TopK's rule). transformers' two paths both respect the
causal rule, but break ties differently — torch.topk over a full row vs over a one-token row — and the
Lightning Indexer's scores tie often (each is a sum of ReLUs: an entry every head scores <= 0 gets
exactly 0). That, and nothing else, is why its cached decode differs from its full forward when
``index_topk`` is smaller than the number of entries; pinned to the same tie rule they agree to 1e-6
(tests/helpers/v4_reference.py ``lowest_index_ties``).
"""

from __future__ import annotations

import numpy as np

from appliance.model.graph.cache import CacheBuilder

__all__ = ["CompressorBuilder"]


class CompressorBuilder(CacheBuilder):
    def compressor_weight(self, prefix: str, width: int, *, overlap: bool) -> np.ndarray:
        """The ``[out, in]`` projection a compressor reads from the normed input: ``[kv | gate]``."""
        series = 2 if overlap else 1
        hidden = self.config.hidden_size
        kv_w = self.tensor(f"{prefix}.kv_proj.weight", (series * width, hidden))
        gate_w = self.tensor(f"{prefix}.gate_proj.weight", (series * width, hidden))
        return np.concatenate([kv_w, gate_w])

    def indexer_head_weight(self, prefix: str) -> np.ndarray:
        """The indexer's per-head score weights ``[Hi, hidden]``, with both constant scalings folded
        in: Relu(a) * s == Relu(a * s) for s > 0."""
        c = self.config
        hi, di = c.index_n_heads, c.index_head_dim
        head_w = self.tensor(f"{prefix}.scorer.weights_proj.weight", (hi, c.hidden_size))
        return head_w * np.float32(di**-0.5 * hi**-0.5)

    def make_compressor(
        self,
        path: str,
        src: str,
        *,
        layer: int,
        prefix: str,
        state: str,
        m: int,
        width: int,
        overlap: bool,
    ) -> str:
        """Update one compressor's state and return its entries ``[B, C, width]`` after this call.

        ``src`` is this call's tokens projected by ``compressor_weight``, ``[B, T, feat]``; ``prefix`` names the transformers module (``...self_attn.compressor`` or ``....indexer``);
        ``state`` is ``cmp`` or ``idx`` (graph inputs ``past.{i}.{state}_src`` / ``_kv``).

        src (x ─ MatMul[kv|gate]) ─┐
        past src ring ──────────── Concat ─┬─ GatherElements(ring keep) ─ present src ring
          (overlap: Reshape to (token, kv|gate, A|B) rows) ─ GatherElements(window sources)
          ─ Reshape[B,J,span,(kv,gate),width] ─ Split(kv, gate) ; gate + position_bias (+ -inf before entry 0)
          ─ Softmax(over span) ─ Mul(kv) ─ ReduceSum ─ RMSNorm ─ RoPE(at w*m)
          ─ ScatterElements(past entries, index w) ─ present entries
        """
        series = 2 if overlap else 1
        ring = 2 * m if overlap else m
        span = 2 * m if overlap else m
        feat = 2 * series * width  # [kv (A|B) | gate (A|B)] per token

        ring_in = f"past.{layer}.{state}_src"
        entries_in = f"past.{layer}.{state}_kv"
        self.add_input(ring_in, self.act, ["batch", ring, feat])
        self.add_input(entries_in, self.act, ["batch", f"capacity{m}", width])

        sources = self.op("Concat", f"{path}/sources/Concat", [ring_in, src], axis=1)
        if overlap:
            # One row per (token, kv|gate, A|B): the window gather picks each source's series itself.
            rows = self.op("Reshape", f"{path}/rows/Reshape", [sources, self.i64([0, -1, width])])
            where = self.make_row_index(f"windows{m}_rows", self.make_window_rows(m, ring), width)
            picked = self.op("GatherElements", f"{path}/gather/GatherElements", [rows, where], axis=1)
        else:
            flat = self.shared(
                ("window_sources_flat", m, ring),
                lambda: self.op(
                    "Reshape",
                    f"/model/cache/windows{m}_sources{span}/flat/Reshape",
                    [self.make_window_sources(m, ring, span), self.i64([0, -1])],
                ),
            )
            where = self.make_row_index(f"windows{m}_sources{span}", flat, feat)
            picked = self.op("GatherElements", f"{path}/gather/GatherElements", [sources, where], axis=1)
        picked = self.op("Reshape", f"{path}/pool/Reshape", [picked, self.i64([0, -1, span, 2, width])])
        kv, gate = self.op_n("Split", f"{path}/pool/Split", [picked], 2, axis=3, num_outputs=2)

        bias = self.tensor(f"{prefix}.position_bias", (m, series * width))
        if overlap:
            bias = np.concatenate([bias[:, :width], bias[:, width:]], axis=0)
        gate = self.op(
            "Add",
            f"{path}/pool/bias/Add",
            [gate, self.weight(f"{prefix}.position_bias.slots", bias[:, None, :])],
        )
        if overlap:
            gate = self.op("Add", f"{path}/pool/first/Add", [gate, self.make_first_window_mask(m)])
        gate = self.to_f32(f"{path}/pool/gate/Cast", gate)
        weights = self.op("Softmax", f"{path}/pool/Softmax", [gate], axis=2)
        weights = self.to_act(f"{path}/pool/weights/Cast", weights)
        pooled = self.op("Mul", f"{path}/pool/Mul", [kv, weights])
        pooled = self.op("ReduceSum", f"{path}/pool/ReduceSum", [pooled, self.i64([2, 3])], keepdims=0)
        normed = self.make_rms_norm(f"{path}/kv_norm", pooled, width, weight=f"{prefix}.kv_norm.weight")
        starts = self.shared(
            ("window_starts", m),
            lambda: self.op(
                "Mul", f"/model/cache/windows{m}_start/Mul", [self.make_candidate_windows(m), self.i64(m)]
            ),
        )
        tables = self.make_rope_tables("compress", starts, f"windows{m}", width)
        entries = self.make_rope(f"{path}/entries", normed, tables, heads=1, width=width)

        at = self.make_row_index(f"windows{m}", self.make_candidate_windows(m), width)
        entries_out = self.op(
            "ScatterElements", f"{path}/write/ScatterElements", [entries_in, at, entries], axis=1
        )
        self.add_output(
            f"present.{layer}.{state}_kv", entries_out, self.act, ["batch", f"capacity{m}", width]
        )

        keep = self.make_row_index(f"ring{ring}_keep", self.make_ring_keep(ring), feat)
        ring_out = self.op("GatherElements", f"{path}/ring/GatherElements", [sources, keep], axis=1)
        self.add_output(f"present.{layer}.{state}_src", ring_out, self.act, ["batch", ring, feat])
        return entries_out

    def make_indexer_picks(
        self, path: str, weights: str, q_residual: str, *, prefix: str, m: int, keys: str
    ) -> tuple[str, str]:
        """The Lightning Indexer's picks per query: entry indices ``[B, T, 1, k]`` and an additive mask
        ``[B, T, 1, k]`` (0 for a visible pick, -inf for a pick that only filled a short list) — the
        head axis kept at 1 throughout, so the mask is already shaped for ``[B, T, H, k]`` scores.

        q_residual ─ MatMul(q_b) ─ RoPE(t) ─ Reshape[B,T,Hi,Di] ─ MatMul(keysᵀ) ─ Relu ─┐
        weights (x ─ MatMul(weights_proj · scales)) ─ Unsqueeze ──────────────── MatMul ─ [B,T,1,C]
          ─ Where(visible, ., -inf) ─ TopK(min(k, C)) ─ picks ─ GatherElements(visibility) ─ keep
        """
        c = self.config
        hi, di = c.index_n_heads, c.index_head_dim
        q = self.make_linear(
            f"{path}/q_b_proj", q_residual, f"{prefix}.q_b_proj.weight", (hi * di, c.q_lora_rank)
        )
        tables = self.make_rope_tables("compress", self.pos_bt, "tokens", di)
        q = self.make_rope(f"{path}/q", q, tables, heads=hi, width=di)
        q = self.op("Reshape", f"{path}/q/Reshape", [q, self.i64([0, 0, hi, di])])
        # Scored in float32, as transformers scores (TopK also has no bf16 kernel).
        q = self.to_f32(f"{path}/q/Cast", q)
        keys_t = self.op("Transpose", f"{path}/keys/Transpose", [keys], perm=[0, 2, 1])
        keys_t = self.to_f32(f"{path}/keys/Cast", keys_t)
        keys_t = self.op("Unsqueeze", f"{path}/keys/Unsqueeze", [keys_t, self.i64([1])])
        scores = self.op("MatMul", f"{path}/scores/MatMul", [q, keys_t])
        scores = self.op("Relu", f"{path}/scores/Relu", [scores])
        weights = self.to_f32(f"{path}/weights/Cast", weights)
        weights = self.op("Unsqueeze", f"{path}/weights/Unsqueeze", [weights, self.i64([2])])
        scores = self.op("MatMul", f"{path}/score/MatMul", [weights, scores])

        visible, additive = self.make_entry_visibility(m, self.capacity_scalar(m, keys))
        scores = self.op("Where", f"{path}/score/Where", [visible, scores, self.const(np.float32(-np.inf))])
        k = self.shared(("topk", m), lambda: self._topk_count(m, keys))
        _, picks = self.op_n("TopK", f"{path}/TopK", [scores, k], 2, axis=-1, largest=1, sorted=1)
        keep = self.op("GatherElements", f"{path}/keep/GatherElements", [additive, picks], axis=-1)
        return picks, keep

    def _topk_count(self, m: int, keys: str) -> str:
        """``[min(index_topk, C)]``: how many entries each query picks."""
        path = f"/model/cache/topk{m}"
        capacity = self.op("Shape", f"{path}/Shape", [keys], start=1, end=2)
        return self.op("Min", f"{path}/Min", [capacity, self.i64([self.config.index_topk])])

    def capacity_scalar(self, m: int, entries: str) -> str:
        """The entry capacity ``C`` (a scalar) read from an entries tensor's shape, once per rate."""

        def make() -> str:
            path = f"/model/cache/capacity{m}"
            shape = self.op("Shape", f"{path}/Shape", [entries], start=1, end=2)
            return self.op("Squeeze", f"{path}/Squeeze", [shape, self.i64([0])])

        result: str = self.shared(("capacity", m), make)
        return result
