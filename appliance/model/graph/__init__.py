"""DeepSeek-V4 -> ONNX graph construction (no torch, no tracing): one graph per pipeline stage.

Public surface:

    build_graphs(ckpt, *, dtype="fp32", quant="none", stages=1, moe="ort", logits="last",
                 weight_sink=None, accuracy_level=4) -> list[onnx.ModelProto]
    graph_io(config, *, dtype="fp32", stages=1, logits="last") -> dict      # bundle.json "io"
    state_shape(entry, *, batch, max_context) -> tuple[int, ...]            # size one state buffer
    stage_layers(n_layers, stages) -> list[(first, last)]

The graph contract (inputs, outputs, cache state, how to chain calls) is docs/bundle.md.
"""

from appliance.model.graph.builder import Checkpoint, WeightSink
from appliance.model.graph.stages import build_graphs, graph_io, stage_files, stage_layers, state_shape

__all__ = [
    "Checkpoint",
    "WeightSink",
    "build_graphs",
    "graph_io",
    "stage_files",
    "stage_layers",
    "state_shape",
]
