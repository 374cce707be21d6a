"""V4 attention: shared-KV MQA over [sliding window | compressed entries], per-head sinks, grouped output.

One KV head of ``head_dim`` channels is both key and value. Queries see the last ``sliding_window``
tokens (the ring plus this call's tokens) and, on CSA/HCA layers, the compressed entries (HCA: every
visible one; CSA: the Lightning Indexer's pick). The per-head sink joins the softmax as one more logit
that has no value: its column is concatenated to the scores (broadcast to ``[B, T, H, 1]`` with a
shape computed once per graph) and its probability dropped — one Concat instead of
``softmax(s) * sigmoid(logsumexp(s) - sink)``'s four nodes, and no ReduceLogSumExp (which has no bf16
CUDA kernel). The value picked up RoPE on its trailing channels, so the output is rotated back by the
query's angle before the grouped low-rank output projection.
"""

from __future__ import annotations

import numpy as np

from appliance.model.config import CSA, HCA, SLIDING
from appliance.model.graph.builder import transpose_2d
from appliance.model.graph.compressor import CompressorBuilder

__all__ = ["AttentionBuilder"]


class AttentionBuilder(CompressorBuilder):
    def make_attention(self, layer: int, x: str) -> str:
        """Attention block of ``layer`` on normed input ``x [B, T, hidden]``; returns ``[B, T, hidden]``.

        x ─ q_a_proj ─ RMSNorm ─ q_residual ─ q_b_proj ─ RoPE ─ Reshape[B,T,H,D] ─ RMSNorm·D^-½ ─ q
        x ─ kv_proj ─ RMSNorm ─ RoPE ─ kv
        near = Concat(past window, kv[, HCA: compressed entries]) ─ GatherElements(ring keep) ─ present window
        far (CSA only) = the indexer's picks, per query
        q ─ MatMul(nearᵀ) ─ Add(mask) ─┐
        q ─ MatMul(farᵀ) ── Add(mask) ─ Concat(·, sink) ─ Softmax ─ Split ─ MatMul(near), MatMul(far) ─ Add
          (sliding, HCA: no far part; Slice off the sink instead of Split, one MatMul)
          ─ Reshape[B,T,H*D] ─ RoPE⁻¹ ─ Reshape[B,T,G,1,.] ─ MatMul(o_a per group) ─ Reshape ─ o_b_proj
        """
        c = self.config
        kind = c.layer_types[layer]
        rope_kind = "main" if kind == SLIDING else "compress"
        h, d, w = c.num_attention_heads, c.head_dim, c.sliding_window
        prefix = f"model.layers.{layer}.self_attn"
        path = f"/model/layers.{layer}/attn"

        q_res = self.make_linear(
            f"{path}/q_a_proj", x, f"{prefix}.q_a_proj.weight", (c.q_lora_rank, c.hidden_size)
        )
        q_res = self.make_rms_norm(
            f"{path}/q_a_norm", q_res, c.q_lora_rank, weight=f"{prefix}.q_a_norm.weight"
        )
        q = self.make_linear(f"{path}/q_b_proj", q_res, f"{prefix}.q_b_proj.weight", (h * d, c.q_lora_rank))
        # The unweighted per-head norm commutes with the rotation (it preserves each head's RMS), so
        # RoPE runs first on the flat [B, T, H*D] projection and the attention factor, a constant on
        # the rotated channels, folds into the norm's weight.
        q = self.make_rope(
            f"{path}/q",
            q,
            self.make_rope_tables(rope_kind, self.pos_bt, "tokens", d, scaled=False),
            heads=h,
            width=d,
        )
        q = self.op("Reshape", f"{path}/q/Reshape", [q, self.i64([0, 0, h, d])])
        factor = np.ones(d, np.float32)
        factor[d - c.qk_rope_head_dim :] = self.rope_spec(rope_kind).attention_factor
        q = self.make_rms_norm(f"{path}/q_b_norm", q, d, scale=factor * np.float32(d**-0.5))

        kv = self.make_linear(f"{path}/kv_proj", x, f"{prefix}.kv_proj.weight", (d, c.hidden_size))
        kv = self.make_rms_norm(f"{path}/kv_norm", kv, d, weight=f"{prefix}.kv_norm.weight")
        kv = self.make_rope(
            f"{path}/kv", kv, self.make_rope_tables(rope_kind, self.pos_bt, "tokens", d), heads=1, width=d
        )

        window_in = self.add_input(f"past.{layer}.window", self.act, ["batch", w, d])
        # Part 1, every layer: the window ring and this call's tokens, [B, 1, W+T, D] shared by heads.
        # HCA's compressed entries are shared by every query too, so they join this part
        # ([B, 1, W+T+C, D], one mask computed per graph) rather than being scored apart.
        near_keys, mask = [window_in, kv], self.make_window_mask()
        if kind == HCA:
            near_keys.append(self._hca_entries(layer, x))
            mask = self.shared(("hca_joined_mask", c.compress_rate(layer)), lambda: self._hca_mask(layer))
        near = self.op("Concat", f"{path}/near/Concat", near_keys, axis=1)
        keep = self.make_row_index(f"ring{w}_keep", self.make_ring_keep(w), d)
        window_out = self.op("GatherElements", f"{path}/window/GatherElements", [near, keep], axis=1)
        self.add_output(f"present.{layer}.window", window_out, self.act, ["batch", w, d])

        near = self.op("Unsqueeze", f"{path}/near/Unsqueeze", [near, self.i64([1])])
        parts = [(near, mask)]
        if kind == CSA:
            parts.append(self._far_keys(layer, x, q_res))

        scores = []
        for i, (keys, mask) in enumerate(parts):
            keys_t = self.op("Transpose", f"{path}/part{i}/Transpose", [keys], perm=[0, 1, 3, 2])
            part = self.op("MatMul", f"{path}/part{i}/scores/MatMul", [q, keys_t])
            scores.append(self.op("Add", f"{path}/part{i}/scores/Add", [part, mask]))
        sinks = self.tensor(f"{prefix}.sinks", (h,)).reshape(1, 1, h, 1)
        sink = self.op(
            "Expand", f"{path}/sink/Expand", [self.weight(f"{prefix}.sinks", sinks), self._sink_shape()]
        )
        joined = self.op("Concat", f"{path}/scores/Concat", [*scores, sink], axis=-1)
        probs = self.op("Softmax", f"{path}/Softmax", [joined], axis=-1)
        if len(parts) == 1:
            kept = self.op(
                "Slice", f"{path}/probs/Slice", [probs, self.i64([0]), self.i64([-1]), self.i64([-1])]
            )
            out = self.op("MatMul", f"{path}/part0/out/MatMul", [kept, near])
        else:
            sizes = self.shared(
                ("split_sizes", kind, c.compress_rate(layer)),
                lambda: self._split_sizes(kind, c.compress_rate(layer), scores),
            )
            split = self.op_n("Split", f"{path}/probs/Split", [probs, sizes], 3, axis=-1)
            outs = [
                self.op("MatMul", f"{path}/part{i}/out/MatMul", [p, keys])
                for i, (p, (keys, _)) in enumerate(zip(split[:2], parts, strict=True))
            ]
            out = self.op("Add", f"{path}/out/Add", outs)
        out = self.op("Reshape", f"{path}/out/Reshape", [out, self.i64([0, 0, h * d])])
        inverse = self.make_rope_tables(rope_kind, self.pos_bt, "tokens", d, inverse=True)
        out = self.make_rope(f"{path}/out", out, inverse, heads=h, width=d)

        g, r = c.o_groups, c.o_lora_rank
        per_group = h * d // g
        # [B,T,G,1,K] @ [G,K,R] -> [B,T,G,1,R]: one batched GEMM per group, in any dtype.
        out = self.op("Reshape", f"{path}/o_a_proj/Reshape", [out, self.i64([0, 0, g, 1, per_group])])
        o_a = self.tensor(f"{prefix}.o_a_proj.weight", (g * r, per_group))
        o_a = np.stack([transpose_2d(part) for part in o_a.reshape(g, r, per_group)])
        o_a_name = self.weight(f"{prefix}.o_a_proj.weight.grouped", o_a)
        out = self.op("MatMul", f"{path}/o_a_proj/MatMul", [out, o_a_name])
        out = self.op("Reshape", f"{path}/o_b_proj/Reshape", [out, self.i64([0, 0, g * r])])
        return self.make_linear(f"{path}/o_b_proj", out, f"{prefix}.o_b_proj.weight", (c.hidden_size, g * r))

    def _hca_entries(self, layer: int, x: str) -> str:
        """HCA's compressed entries after this call, ``[B, C, D]``: every one is a key, masked to the
        visible ones."""
        c = self.config
        prefix = f"model.layers.{layer}.self_attn"
        path = f"/model/layers.{layer}/attn/compressor"
        weight = self.compressor_weight(f"{prefix}.compressor", c.head_dim, overlap=False)
        src = self.make_matmul(
            f"{path}/src", x, f"{prefix}.compressor.kv_gate_proj.weight", weight, quantize=False
        )
        return self.make_compressor(
            path, src, layer=layer, prefix=f"{prefix}.compressor", state="cmp", m=c.compress_rate(layer),
            width=c.head_dim, overlap=False,
        )  # fmt: skip

    def _hca_mask(self, layer: int) -> str:
        """``[B, T, 1, W+T+C]``: the window mask, then the entries' visibility (once per rate)."""
        m = self.config.compress_rate(layer)
        entries = f"past.{layer}.cmp_kv"  # only its shape is read: C
        _, additive = self.make_entry_visibility(m, self.capacity_scalar(m, entries))
        return self.op(
            "Concat", f"/model/cache/hca{m}_mask/Concat", [self.make_window_mask(), additive], axis=-1
        )

    def _far_keys(self, layer: int, x: str, q_res: str) -> tuple[str, str]:
        """Part 2 of a CSA layer's keys and its additive mask, laid out for ``[B, T, H, D]`` queries:
        only the indexer's picks, gathered per query — ``[B, T, k, D]`` with ``[B, T, 1, k]`` — so a
        decode step reads k entries, not the whole compressed cache.
        """
        c = self.config
        d, m = c.head_dim, c.compress_rate(layer)
        prefix = f"model.layers.{layer}.self_attn"
        path = f"/model/layers.{layer}/attn"
        # The three float projections of x a CSA layer has (compressor, indexer's compressor, indexer's
        # head weights) run as one MatMul and a Split.
        cmp, idx = f"{prefix}.compressor", f"{prefix}.compressor.indexer"
        weights = [
            self.compressor_weight(cmp, d, overlap=True),
            self.compressor_weight(idx, c.index_head_dim, overlap=True),
            self.indexer_head_weight(idx),
        ]
        joined = self.make_matmul(
            f"{path}/x_proj", x, f"{prefix}.x_proj.weight", np.concatenate(weights), quantize=False
        )
        sizes = self.i64([len(w) for w in weights])
        cmp_src, idx_src, head_weights = self.op_n(
            "Split", f"{path}/x_proj/Split", [joined, sizes], 3, axis=-1
        )
        entries = self.make_compressor(
            f"{path}/compressor", cmp_src, layer=layer, prefix=cmp, state="cmp", m=m, width=d, overlap=True,
        )  # fmt: skip
        index_keys = self.make_compressor(
            f"{path}/indexer", idx_src, layer=layer, prefix=idx, state="idx", m=m, width=c.index_head_dim,
            overlap=True,
        )  # fmt: skip
        picks, keep = self.make_indexer_picks(
            f"{path}/indexer", head_weights, q_res, prefix=idx, m=m, keys=index_keys
        )
        at = self.op("Reshape", f"{path}/far/Reshape", [picks, self.i64([0, 0, -1, 1])])
        keys = self.op("GatherND", f"{path}/far/GatherND", [entries, at], batch_dims=1)
        return keys, keep

    def _split_sizes(self, kind: str, m: int, scores: list[str]) -> str:
        """[W+T, far keys, 1 (the sink)]: identical for every layer of one kind and rate, so computed once."""
        path = f"/model/cache/{kind}{m}_split"
        near = self.op("Shape", f"{path}/near/Shape", [scores[0]], start=3, end=4)
        far = self.op("Shape", f"{path}/far/Shape", [scores[1]], start=3, end=4)
        return self.op("Concat", f"{path}/Concat", [near, far, self.i64([1])], axis=0)

    def _sink_shape(self) -> str:
        """[B, T, 1, 1]: what a layer's [1, 1, H, 1] sinks are expanded by to join its scores."""

        def make() -> str:
            path = "/model/attn/sink_shape"
            bt = self.op("Shape", f"{path}/Shape", [self.input_ids])
            return self.op("Concat", f"{path}/Concat", [bt, self.i64([1, 1])], axis=0)

        return str(self.shared("sink_shape", make))
