"""V4's MoE block: hash-routed or top-k routed experts plus one shared expert.

Routing (both kinds): scores = sqrt(softplus(x @ gateᵀ)) (or sigmoid); the experts are chosen by
``topk(scores + e_score_correction_bias)`` (the bias steers selection only) or, on hash layers, by the
frozen ``tid2eid[token]`` table; their weights are the chosen *scores*, renormalised to sum 1 and times
``routed_scaling_factor`` — folded here into the experts' down projections, which is the same product.
Experts are SwiGLU with the gate clamped above and the up projection clamped both ways at
``swiglu_limit``.

Two interchangeable expert paths, chosen at build time:

- ``ort`` (the default): ONNX Runtime's fused ``com.microsoft.MoE``. Its router input is softmaxed,
  top-k'd and renormalised inside the operator, so the graph feeds it ``log(score)`` on the chosen
  experts and -inf elsewhere: softmax then reproduces exactly the renormalised chosen scores. The
  kernel groups the tokens by expert and reads each chosen expert's weights in place, so a prefill's
  working set is activations only, ``tokens x k x (3 x expert width + hidden)`` floats; it has CPU
  (float32, float16) and CUDA (float32, float16, bfloat16) kernels.
- ``portable``: standard ONNX ops, for runtimes without Microsoft's contrib ops; gathers the chosen
  experts' weights per token, so a call materialises ``tokens x k`` expert matrices (a V4-Flash
  expert is 48 MiB in fp16: ~300 MiB a token at top-6). The runner sizes its prefill chunks for it
  (``appliance/engine/memory.py``); it decodes no faster than ``ort`` on CPU (bench/graph_decode.py).

A hash table may route a token to one expert twice (transformers then counts it twice); the fused
operators' top-k picks an expert once, so their router input scatter-*adds* the chosen scores: the
expert's weight is the sum, the product the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from onnx import TensorProto

from appliance.model.graph.builder import MS_DOMAIN, QUANT_BLOCK, GraphBuilder, transpose_2d
from shared.errors import ModelError

__all__ = ["DEFAULT_MOE", "MOE_PATHS", "MoEBuilder"]

MOE_PATHS = ("ort", "portable")  # the first is the default
DEFAULT_MOE = MOE_PATHS[0]


class MoEBuilder(GraphBuilder):
    moe_path: str = DEFAULT_MOE
    input_ids: str  # [B, T] int64, set by the model builder

    def make_moe(self, layer: int, x: str) -> str:
        """Routed experts + shared expert on normed ``x [B, T, hidden]``.

        x ─ Reshape[N,D] ─ MatMul(gate) ─ Softplus ─ Sqrt ─ scores ─┬─ Add(bias) ─ TopK ─┐ (or Gather(tid2eid, ids))
                                                                    └──── GatherElements ─┴─ chosen (experts, scores)
          ─ experts (portable | com.microsoft.MoE) ─ Add(shared expert(x))
        """
        if self.moe_path not in MOE_PATHS:
            raise ModelError(f"unsupported moe path {self.moe_path!r} (choose from {', '.join(MOE_PATHS)})")
        c = self.config
        e, k, dim = c.n_routed_experts, c.num_experts_per_tok, c.hidden_size
        prefix = f"model.layers.{layer}.mlp"
        path = f"/model/layers.{layer}/moe"

        flat = self.op("Reshape", f"{path}/flat/Reshape", [x, self.const([-1, dim], np.int64)])
        logits = self.make_linear(f"{path}/gate", flat, f"{prefix}.gate.weight", (e, dim), quantize=False)
        logits = self.to_f32(f"{path}/gate/Cast", logits)
        if c.scoring_func == "sqrtsoftplus":
            scores = self.op("Softplus", f"{path}/scores/Softplus", [logits])
            scores = self.op("Sqrt", f"{path}/scores/Sqrt", [scores])
        else:
            scores = self.op("Sigmoid", f"{path}/scores/Sigmoid", [logits])

        if c.mlp_layer_types[layer] == "hash_moe":
            table = self.tensor(f"{prefix}.gate.tid2eid", (c.vocab_size, k))
            if table.min() < 0 or table.max() >= e:
                raise ModelError(f"tensor '{prefix}.gate.tid2eid' names an expert outside 0..{e - 1}")
            ids = self.op("Reshape", f"{path}/ids/Reshape", [self.input_ids, self.const([-1], np.int64)])
            table_name = self.raw_weight(f"{prefix}.gate.tid2eid", table.astype(np.int64))
            chosen = self.op("Gather", f"{path}/route/Gather", [table_name, ids], axis=0)
        else:
            bias = self.tensor(f"{prefix}.gate.e_score_correction_bias", (e,))
            biased = self.op(
                "Add",
                f"{path}/route/Add",
                [scores, self.weight(f"{prefix}.gate.e_score_correction_bias", bias, keep_fp32=True)],
            )
            _, chosen = self.op_n(
                "TopK", f"{path}/route/TopK", [biased, self.const([k], np.int64)], 2, axis=-1
            )
        weights = self.op("GatherElements", f"{path}/route/GatherElements", [scores, chosen], axis=1)

        if self.expert_bits:
            routed = self._experts_qmoe(path, prefix, x, scores, chosen, weights)
        elif self.moe_path == "ort":
            routed = self._experts_ort(path, prefix, x, scores, chosen, weights)
        else:
            routed = self._experts_portable(path, prefix, x, flat, chosen, weights)
        shared = self._shared_expert(f"{path}/shared_experts", f"{prefix}.shared_experts", x)
        return self.op("Add", f"{path}/Add", [routed, shared])

    def _experts_portable(self, path: str, prefix: str, x: str, flat: str, chosen: str, weights: str) -> str:
        """Gather the chosen experts' matrices per token and run them batched.

        weights ─ ReduceSum ─ Add(1e-20) ─ Div ─ normalised
        flat ─ Unsqueeze ─ MatMul(Gather(w13, chosen)) ─ Split ─ clamps ─ silu·up ─ MatMul(Gather(w2, chosen))
          ─ Reshape[N,k,D] ─ MatMul(normalised) ─ Reshape(x)
        """
        c = self.config
        limit = c.swiglu_limit
        total = self.op(
            "ReduceSum", f"{path}/route/ReduceSum", [weights, self.const([-1], np.int64)], keepdims=1
        )
        total = self.op("Add", f"{path}/route/Add_eps", [total, self.const(np.float32(1e-20))])
        weights = self.op("Div", f"{path}/route/Div", [weights, total])
        weights = self.to_act(f"{path}/route/Cast", weights)

        (w13,) = self._gate_up(
            prefix, lambda w: (self.stored(transpose_2d(w)),), [f"{prefix}.experts.gate_up_proj.T"]
        )
        (w2,) = self._down(
            prefix, lambda w: (self.stored(transpose_2d(w)),), [f"{prefix}.experts.down_proj.T"]
        )
        rows = self.op("Unsqueeze", f"{path}/experts/Unsqueeze", [flat, self.const([1, 2], np.int64)])
        w13_t = self.op("Gather", f"{path}/experts/gate_up/Gather", [w13, chosen], axis=0)
        h = self.op("MatMul", f"{path}/experts/gate_up/MatMul", [rows, w13_t])
        gate, up = self.op_n("Split", f"{path}/experts/Split", [h], 2, axis=-1, num_outputs=2)
        act = self._swiglu(f"{path}/experts", gate, up, limit)
        w2_t = self.op("Gather", f"{path}/experts/down/Gather", [w2, chosen], axis=0)
        y = self.op("MatMul", f"{path}/experts/down/MatMul", [act, w2_t])
        y = self.op("Squeeze", f"{path}/experts/Squeeze", [y, self.const([2], np.int64)])
        weights = self.op("Unsqueeze", f"{path}/combine/Unsqueeze", [weights, self.const([1], np.int64)])
        y = self.op("MatMul", f"{path}/combine/MatMul", [weights, y])
        shape = self.op("Shape", f"{path}/combine/Shape", [x])
        return self.op("Reshape", f"{path}/combine/Reshape", [y, shape])

    def _router_logits(self, path: str, scores: str, chosen: str, weights: str) -> str:
        """log(chosen score) on the chosen experts (summed where a hash row repeats one), -inf
        elsewhere: the fused ops' router input.

        weights ─ ScatterElements[add](Expand(0, [N,E]), chosen) ─ Log
        """
        shape = self.op("Shape", f"{path}/route/Shape", [scores])
        floor = self.op("Expand", f"{path}/route/Expand", [self.const(np.float32(0.0)), shape])
        dense = self.op(
            "ScatterElements",
            f"{path}/route/ScatterElements",
            [floor, chosen, weights],
            axis=1,
            reduction="add",
        )
        router = self.op("Log", f"{path}/route/Log", [dense])
        return self.to_act(f"{path}/route/Cast", router)

    def _experts_qmoe(self, path: str, prefix: str, x: str, scores: str, chosen: str, weights: str) -> str:
        """com.microsoft.QMoE on block-quantized experts (quant.py's layout, gate/up interleaved)."""
        from appliance.model.quant import interleave_gate_up, quantize_blocks

        c = self.config
        bits = self.expert_bits
        for width in (c.hidden_size, c.moe_intermediate_size):
            if width % QUANT_BLOCK:
                raise ModelError(f"QMoE needs expert widths that are multiples of {QUANT_BLOCK}; got {width}")

        def pack(weight: np.ndarray) -> tuple[np.ndarray, ...]:
            q = quantize_blocks(weight, bits=bits, block_size=QUANT_BLOCK)
            return q.flat_packed(), self.stored(q.scales), q.zero_points

        w1, w2 = f"{prefix}.experts.gate_up_proj", f"{prefix}.experts.down_proj"
        fc1 = self._gate_up(
            prefix, lambda w: pack(interleave_gate_up(w)), [f"{w1}.{k}" for k in ("qweight", "scales", "zp")]
        )
        fc2 = self._down(prefix, pack, [f"{w2}.{k}" for k in ("qweight", "scales", "zp")])
        router = self._router_logits(path, scores, chosen, weights)
        inputs = [x, router, fc1[0], fc1[1], "", fc2[0], fc2[1], "", "", "", "", fc1[2], fc2[2]]
        return self.op(
            "QMoE",
            f"{path}/experts/QMoE",
            inputs,
            domain=MS_DOMAIN,
            k=c.num_experts_per_tok,
            expert_weight_bits=bits,
            block_size=QUANT_BLOCK,
            quant_type="int",
            activation_type="swiglu",
            swiglu_fusion=1,
            swiglu_limit=float(c.swiglu_limit),
            activation_alpha=1.0,
            activation_beta=0.0,
            normalize_routing_weights=1,
        )

    def _experts_ort(self, path: str, prefix: str, x: str, scores: str, chosen: str, weights: str) -> str:
        """com.microsoft.MoE fed log(chosen score) / -inf router logits.

        weights ─ Log ─ ScatterElements(-inf [N,E], chosen) ─ MoE(x, ., w13 interleaved, w2)
        """
        from appliance.model.quant import interleave_gate_up

        c = self.config
        router = self._router_logits(path, scores, chosen, weights)
        # ORT's CPU kernel wants gate and up rows interleaved (swiglu_fusion=1).
        (w13,) = self._gate_up(
            prefix,
            lambda w: (self.stored(interleave_gate_up(w)),),
            [f"{prefix}.experts.gate_up_proj.interleaved"],
        )
        (w2,) = self._down(prefix, lambda w: (self.stored(w),), [f"{prefix}.experts.down_proj.scaled"])
        return self.op(
            "MoE",
            f"{path}/experts/MoE",
            [x, router, w13, "", w2],
            domain=MS_DOMAIN,
            k=c.num_experts_per_tok,
            activation_type="swiglu",
            swiglu_fusion=1,
            swiglu_limit=float(c.swiglu_limit),
            activation_alpha=1.0,
            activation_beta=0.0,
            normalize_routing_weights=1,
        )

    def _gate_up(
        self, prefix: str, transform: Callable[[np.ndarray], tuple[np.ndarray, ...]], outputs: Sequence[str]
    ) -> list[str]:
        """Per-expert [gate | up] ``[2I, D]`` through ``transform``, stacked into ``outputs``."""
        c = self.config
        shape = (2 * c.moe_intermediate_size, c.hidden_size)
        return self.expert_stack(f"{prefix}.experts.gate_up_proj", shape, transform, outputs)

    def _down(
        self, prefix: str, transform: Callable[[np.ndarray], tuple[np.ndarray, ...]], outputs: Sequence[str]
    ) -> list[str]:
        """Per-expert down ``[D, I]`` times routed_scaling_factor, through ``transform``, into ``outputs``."""
        c = self.config
        scale = np.float32(c.routed_scaling_factor)
        shape = (c.hidden_size, c.moe_intermediate_size)
        return self.expert_stack(
            f"{prefix}.experts.down_proj", shape, lambda w: transform(w * scale), outputs
        )

    def _shared_expert(self, path: str, prefix: str, x: str) -> str:
        """x ─ MatMul([gate|up]) ─ Split ─ clamps ─ silu·up ─ MatMul(down)"""
        c = self.config
        inter, dim = c.moe_intermediate_size, c.hidden_size
        fused = np.concatenate(
            [
                self.tensor(f"{prefix}.gate_proj.weight", (inter, dim)),
                self.tensor(f"{prefix}.up_proj.weight", (inter, dim)),
            ]
        )
        h = self.make_matmul(f"{path}/gate_up", x, f"{prefix}.gate_up_proj.weight", fused)
        gate, up = self.op_n("Split", f"{path}/Split", [h], 2, axis=-1, num_outputs=2)
        act = self._swiglu(path, gate, up, c.swiglu_limit)
        return self.make_linear(f"{path}/down_proj", act, f"{prefix}.down_proj.weight", (dim, inter))

    def _swiglu(self, path: str, gate: str, up: str, limit: float) -> str:
        # Min/Max where the activations are bf16: CUDA's Clip has no bf16 kernel (a CPU fallback).
        gate = self.op("Min", f"{path}/gate/Min", [gate, self.const_act(limit)])
        if self.act == TensorProto.BFLOAT16:
            up = self.op("Max", f"{path}/up/Max", [up, self.const_act(-limit)])
            up = self.op("Min", f"{path}/up/Min", [up, self.const_act(limit)])
        else:
            up = self.op("Clip", f"{path}/up/Clip", [up, self.const_act(-limit), self.const_act(limit)])
        sig = self.op("Sigmoid", f"{path}/gate/Sigmoid", [gate])
        silu = self.op("Mul", f"{path}/gate/Mul", [gate, sig])
        return self.op("Mul", f"{path}/Mul", [silu, up])
