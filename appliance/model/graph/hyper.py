"""Manifold-constrained hyper-connections (mHC): the ``hc_mult`` residual streams and the final head.

Sinkhorn in the log domain. transformers normalises columns, then ``iters - 1`` times rows and
columns, each as ``x / (sum + eps)``. For positive ``x``, ``x / sum(x) == exp(LogSoftmax(log x))``, so
each half-step is one LogSoftmax node over the other axis: ~2 nodes per iteration instead of ~6
(ReduceSum, Add, Div twice), and no Exp/Log in between. Dropping the ``+ eps`` (1e-6) in those
denominators changes a doubly-stochastic 4x4 matrix, whose row and column sums are 1, by about 1e-6
relative — far inside the 1e-4 logit tolerance; the ``+ eps`` after the initial softmax is kept (it
matters for tiny entries).
"""

from __future__ import annotations

import numpy as np

from appliance.model.graph.builder import GraphBuilder

__all__ = ["HyperBuilder"]


class HyperBuilder(GraphBuilder):
    def make_hc_pre(self, path: str, prefix: str, streams: str) -> tuple[str, str, str]:
        """Weights of one hyper-connection and the collapsed block input.

        Returns ``(post [B,T,hc,1], combᵀ [B,T,hc,hc], collapsed [B,T,hidden])``.

        streams ─ Reshape[B,T,1,hc·D] ─ RMSNorm ─ MatMul(fn·scale) ─ Add(base) ─ Reshape[B,T,hc,2+hc] ─ Split
          [pre|post] ─ Sigmoid ─ Mul([1,2]) ─ Add([eps,0]) ─ Split
            pre ─ Mul(streams) ─ ReduceSum(streams axis) ─ collapsed
            post
          combᵀ ─ Softmax ─ Add(eps) ─ Log ─ LogSoftmax ─ LogSoftmax × 2(iters-1) ─ ... ─ Softmax

        ``fn``'s rows are laid out so that row ``h`` of the reshaped mix is ``[pre_h, post_h,
        combᵀ[h, :]]``: one Reshape gives pre and post as columns (what the collapse and the spread
        broadcast against) and combᵀ, whose normalisations run over the other axis than
        transformers' (its rows are our columns). One Sigmoid serves pre and post (then ``·1 + eps``
        and ``·2 + 0``: the same products). The last normalisation is a Softmax, the Exp of the
        LogSoftmax it replaces.
        """
        c = self.config
        hc, dim = c.hc_mult, c.hidden_size
        n_mix = (2 + hc) * hc
        fn = self.tensor(f"{prefix}.fn", (n_mix, hc * dim))
        scale = self.tensor(f"{prefix}.scale", (3,))
        base = self.tensor(f"{prefix}.base", (n_mix,))
        # mix * scale + base, with the per-group scale folded into fn's rows.
        row_scale = np.concatenate([np.full(hc, scale[0]), np.full(hc, scale[1]), np.full(hc * hc, scale[2])])
        # Row h: pre_h, post_h, then transformers' comb[j, h] for every j (combᵀ's row h).
        order = np.concatenate([[h, hc + h, *(2 * hc + np.arange(hc) * hc + h)] for h in range(hc)])
        fn = (fn * row_scale[:, None].astype(np.float32))[order]
        mix = self._mix(path, streams, f"{prefix}.fn", fn)
        mix = self.op(
            "Add", f"{path}/mix/Add", [mix, self.weight(f"{prefix}.base", base[order], keep_fp32=True)]
        )
        mix = self.op("Reshape", f"{path}/mix/Reshape", [mix, self.const([0, 0, hc, 2 + hc], np.int64)])
        weights, comb = self.op_n("Split", f"{path}/Split", [mix, self.const([2, hc], np.int64)], 2, axis=-1)

        weights = self.op("Sigmoid", f"{path}/weights/Sigmoid", [weights])
        weights = self.op("Mul", f"{path}/weights/Mul", [weights, self.const(np.array([1.0, 2.0], np.float32))])
        weights = self.op("Add", f"{path}/weights/Add", [weights, self.const(np.array([c.hc_eps, 0.0], np.float32))])
        weights = self.to_act(f"{path}/weights/Cast", weights)
        pre, post = self.op_n("Split", f"{path}/weights/Split", [weights], 2, axis=-1, num_outputs=2)
        collapsed = self.op("Mul", f"{path}/collapse/Mul", [pre, streams])
        collapsed = self.op(
            "ReduceSum", f"{path}/collapse/ReduceSum", [collapsed, self.const([2], np.int64)], keepdims=0
        )

        # Axis names below are transformers' (rows of comb = axis -1 there = axis -2 here).
        comb = self.op("Softmax", f"{path}/comb/Softmax", [comb], axis=-2)
        comb = self.op("Add", f"{path}/comb/Add", [comb, self.const(np.float32(c.hc_eps))])
        comb = self.op("Log", f"{path}/comb/Log", [comb])
        last = 2 * c.hc_sinkhorn_iters - 1
        for i in range(last):  # cols_0, rows_1, cols_1, ..., cols_{iters-1}
            kind, axis = ("cols", -1) if i % 2 == 0 else ("rows", -2)
            op = "Softmax" if i == last - 1 else "LogSoftmax"
            comb = self.op(op, f"{path}/sinkhorn/{kind}_{(i + 1) // 2}", [comb], axis=axis)
        return post, self.to_act(f"{path}/comb/Cast", comb), collapsed

    def make_hc_post(self, path: str, post: str, comb_t: str, block_out: str, streams: str) -> str:
        """``post ⊗ block_out + combᵀ @ streams``: the block's output spread back over the streams.

        block_out ─ Unsqueeze ─ Mul(post) ─┐
        streams ─ MatMul(combᵀ) ────────── Add
        """
        spread = self.op("Unsqueeze", f"{path}/post/Unsqueeze_out", [block_out, self.const([2], np.int64)])
        spread = self.op("Mul", f"{path}/post/Mul_out", [post, spread])
        mixed = self.op("MatMul", f"{path}/comb/MatMul", [comb_t, streams])
        return self.op("Add", f"{path}/residual/Add", [spread, mixed])

    def make_hc_head(self, path: str, streams: str) -> str:
        """The final collapse of the streams (``model.hc_head``) into ``[B, T, hidden]``.

        streams ─ Reshape ─ RMSNorm ─ MatMul(hc_fn·hc_scale) ─ Add(hc_base) ─ Sigmoid ─ Add(eps) ─ collapse
        """
        c = self.config
        hc, dim = c.hc_mult, c.hidden_size
        fn = self.tensor("model.hc_head.hc_fn", (hc, hc * dim))
        scale = self.tensor("model.hc_head.hc_scale", (1,))
        base = self.tensor("model.hc_head.hc_base", (hc,))
        mix = self._mix(path, streams, "model.hc_head.hc_fn", fn * scale[0])
        mix = self.op(
            "Add", f"{path}/mix/Add", [mix, self.weight("model.hc_head.hc_base", base, keep_fp32=True)]
        )
        pre = self.op("Sigmoid", f"{path}/pre/Sigmoid", [mix])
        pre = self.op("Add", f"{path}/pre/Add", [pre, self.const(np.float32(c.hc_eps))])
        return self._collapse(path, streams, pre)

    def _mix(self, path: str, streams: str, name: str, fn: np.ndarray) -> str:
        c = self.config
        flat = self.op("Reshape", f"{path}/flat/Reshape", [streams, self.const([0, 0, 1, -1], np.int64)])
        flat = self.to_f32(f"{path}/flat/Cast", flat)
        ones = self.const(np.ones(c.hc_mult * c.hidden_size, np.float32))
        normed = self.op(
            "RMSNormalization", f"{path}/norm/RMSNormalization", [flat, ones], axis=-1, epsilon=c.rms_norm_eps
        )
        fn_t = self.weight(name, np.ascontiguousarray(fn.T), keep_fp32=True)
        return self.op("MatMul", f"{path}/mix/MatMul", [normed, fn_t])

    def _collapse(self, path: str, streams: str, pre: str) -> str:
        pre = self.to_act(f"{path}/pre/Cast", pre)  # [B, T, 1, hc]
        collapsed = self.op("MatMul", f"{path}/collapse/MatMul", [pre, streams])
        return self.op("Squeeze", f"{path}/collapse/Squeeze", [collapsed, self.const([2], np.int64)])
