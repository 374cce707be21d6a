"""The V4 decoder as one ONNX graph per pipeline stage: embedding, layers, final head, LM head."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from appliance.model.graph.attention import AttentionBuilder
from appliance.model.graph.builder import MATMUL_ACCURACY, Checkpoint, WeightSink
from appliance.model.graph.hyper import HyperBuilder
from appliance.model.graph.moe import MoEBuilder

__all__ = ["LOGITS_MODES", "V4GraphBuilder"]

LOGITS_MODES = ("last", "all")


class V4GraphBuilder(AttentionBuilder, MoEBuilder, HyperBuilder):
    """Builds the graph of layers ``[first, last)``; stage 0 embeds, the last stage has the heads."""

    def __init__(
        self,
        ckpt: Checkpoint,
        *,
        layers: tuple[int, int],
        dtype: str = "fp32",
        quant: str = "none",
        moe: str = "ort",
        logits: str = "last",
        weight_sink: WeightSink | None = None,
        accuracy_level: int = MATMUL_ACCURACY,
    ) -> None:
        super().__init__(
            ckpt, dtype=dtype, quant=quant, weight_sink=weight_sink, accuracy_level=accuracy_level
        )
        self.first, self.last = layers
        self.moe_path = moe
        self.logits_mode = logits

    def build(self, name: str) -> onnx.ModelProto:
        """Stage graph: (input_ids, positions, [hidden_streams_in], past.*) -> (logits | hidden_streams, present.*)

        positions ─ Unsqueeze ─ Add(Range(T)) ─ pos_bt (every token's absolute position)
        stage 0: input_ids ─ Gather(embed) ─ Unsqueeze ─ Expand(hc streams)
        layers: streams ─ hc_pre ─ RMSNorm ─ attention ─ hc_post ─ hc_pre ─ RMSNorm ─ MoE ─ hc_post
        last stage: streams ─ [Slice last position] ─ hc_head ─ RMSNorm ─ lm_head ─ logits
        """
        c = self.config
        hc, dim = c.hc_mult, c.hidden_size
        self.input_ids = self.add_input("input_ids", TensorProto.INT64, ["batch", "seq"])
        self.positions = self.add_input("positions", TensorProto.INT64, ["batch"])
        seq = self.op("Shape", "/model/seq/Shape", [self.input_ids], start=1, end=2)
        self.seq_len = self.op("Squeeze", "/model/seq/Squeeze", [seq, self.i64([0])])
        steps = self.op("Range", "/model/pos/Range", [self.i64(0), self.seq_len, self.i64(1)])
        first = self.op("Unsqueeze", "/model/pos/Unsqueeze", [self.positions, self.i64([1])])
        self.pos_bt = self.op("Add", "/model/pos/Add", [first, steps])

        if self.first == 0:
            embed = self.weight(
                "model.embed_tokens.weight", self.tensor("model.embed_tokens.weight", (c.vocab_size, dim))
            )
            x = self.op("Gather", "/model/embed_tokens/Gather", [embed, self.input_ids], axis=0)
            x = self.op("Unsqueeze", "/model/streams/Unsqueeze", [x, self.i64([2])])
            streams = self.op("Expand", "/model/streams/Expand", [x, self.i64([1, 1, hc, 1])])
        else:
            streams = self.add_input("hidden_streams_in", self.act, ["batch", "seq", hc, dim])

        for layer in range(self.first, self.last):
            streams = self.make_layer(layer, streams)

        if self.last < c.num_hidden_layers:
            self.add_output("hidden_streams", streams, self.act, ["batch", "seq", hc, dim])
        else:
            self.add_output("logits", self.make_lm_head(streams), TensorProto.FLOAT, self._logits_shape())
        # Outputs in contract order (graph_io): the stage's result, then present.* as past.* come in.
        by_name = {o.name: o for o in self.outputs}
        main = [o for o in self.outputs if not o.name.startswith("present.")]
        presents = [by_name["present." + i.name[5:]] for i in self.inputs if i.name.startswith("past.")]
        self.outputs = main + presents
        return self.build_model(name)

    def make_layer(self, layer: int, streams: str) -> str:
        """One decoder layer on the ``[B, T, hc, D]`` streams (see ``build`` for the outline)."""
        c = self.config
        prefix = f"model.layers.{layer}"
        path = f"/model/layers.{layer}"
        post, comb_t, collapsed = self.make_hc_pre(f"{path}/attn_hc", f"{prefix}.attn_hc", streams)
        x = self.make_rms_norm(
            f"{path}/input_layernorm", collapsed, c.hidden_size, weight=f"{prefix}.input_layernorm.weight"
        )
        out = self.make_attention(layer, x)
        streams = self.make_hc_post(f"{path}/attn_hc", post, comb_t, out, streams)

        post, comb_t, collapsed = self.make_hc_pre(f"{path}/ffn_hc", f"{prefix}.ffn_hc", streams)
        x = self.make_rms_norm(
            f"{path}/post_attention_layernorm",
            collapsed,
            c.hidden_size,
            weight=f"{prefix}.post_attention_layernorm.weight",
        )
        out = self.make_moe(layer, x)
        return self.make_hc_post(f"{path}/ffn_hc", post, comb_t, out, streams)

    def make_lm_head(self, streams: str) -> str:
        """streams ─ [Slice last] ─ hc_head ─ RMSNorm(norm) ─ MatMul(lm_head) ─ [Squeeze] ─ Cast(float32)"""
        c = self.config
        if self.logits_mode == "last":
            streams = self.op(
                "Slice",
                "/model/last/Slice",
                [streams, self.i64([-1]), self.i64([np.iinfo(np.int64).max]), self.i64([1])],
            )
        x = self.make_hc_head("/model/hc_head", streams)
        x = self.make_rms_norm("/model/norm", x, c.hidden_size, weight="model.norm.weight")
        head = "model.embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight"
        logits = self.make_matmul(
            "/lm_head", x, "lm_head.weight", self.tensor(head, (c.vocab_size, c.hidden_size)), quantize=False
        )
        if self.logits_mode == "last":
            logits = self.op("Squeeze", "/lm_head/Squeeze", [logits, self.i64([1])])
        return (
            logits
            if self.act == TensorProto.FLOAT
            else self.op("Cast", "/lm_head/Cast", [logits], to=TensorProto.FLOAT)
        )

    def _logits_shape(self) -> list[int | str]:
        v = self.config.vocab_size
        return ["batch", v] if self.logits_mode == "last" else ["batch", "seq", v]
