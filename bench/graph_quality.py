"""Reduced-precision graphs against the fp32 graph, with the reference's own precision loss as the peer.

    .venv/bin/python bench/graph_quality.py [--tokens 200] [--seed 0]

Prints, for fp16 / int8 / int4 bundles of a small random V4 model: top-1 agreement and mean/min logit
cosine against the fp32 graph, and the same figures for transformers' reference run in fp16 (the peer:
what halving precision does to the model itself). Also prints graph node counts per layer type.
Test-only dependencies (torch, transformers) are needed: this builds its model from the reference.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.model.graph import build_graphs, graph_io
from tests.helpers.v4_onnx import StageRunner
from tests.helpers.v4_reference import StateDictCheckpoint, lowest_index_ties, reference_model, tiny_config


def agreement(ours: np.ndarray, base: np.ndarray) -> tuple[float, float, float]:
    cosine = (ours * base).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(base, axis=-1)
    return float((ours.argmax(-1) == base.argmax(-1)).mean()), float(cosine.mean()), float(cosine.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = tiny_config(hidden_size=128, q_lora_rank=64, o_lora_rank=32, moe_intermediate_size=64)
    model = reference_model(config, seed=args.seed)
    ckpt = StateDictCheckpoint(model)
    ids = np.random.default_rng(args.seed).integers(0, config.vocab_size, args.tokens)

    def run(**options: str) -> np.ndarray:
        graphs = build_graphs(ckpt, logits="all", **options)
        io = graph_io(ckpt.config, logits="all", dtype=options.get("dtype", "fp32"))
        return StageRunner(graphs, io, max_context=args.tokens).step(ids[None], np.array([0]))[0]

    base = run()
    with lowest_index_ties(), torch.no_grad():
        ref32 = model(torch.tensor(ids)[None], use_cache=False).logits[0].numpy()
        ref16 = model.half()(torch.tensor(ids)[None], use_cache=False).logits[0].float().numpy()
    peer_top1, peer_cos, peer_min = agreement(ref16, ref32)
    print(
        f"random V4 model: hidden {config.hidden_size}, {config.num_hidden_layers} layers, {args.tokens} tokens"
    )
    print(f"fp32 graph vs reference fp32: max |diff| {np.abs(base - ref32).max():.2e}")
    print(
        f"peer  reference fp16 vs fp32: top-1 {peer_top1:6.1%}  cosine mean {peer_cos:.5f} min {peer_min:.5f}"
    )
    for label, options in (
        ("fp16", {"dtype": "fp16"}),
        ("int8", {"quant": "int8"}),
        ("int4", {"quant": "int4"}),
    ):
        top1, cos, low = agreement(run(**options), base)
        print(
            f"graph {label:>4} vs fp32 graph:     top-1 {top1:6.1%}  cosine mean {cos:.5f} min {low:.5f}"
            f"  (top-1 ratio to peer {top1 / peer_top1:.3f})"
        )
    graph = build_graphs(ckpt)[0]
    per_layer = Counter(n.name.split("/")[2] for n in graph.graph.node if n.name.startswith("/model/layers."))
    for layer, kind in enumerate(config.layer_types):
        print(f"nodes in layer {layer} ({kind}): {per_layer[f'layers.{layer}']}")
    sinkhorn = sum(1 for n in graph.graph.node if "/sinkhorn/" in n.name) // config.num_hidden_layers
    print(
        f"of which Sinkhorn (both hyper-connections): {sinkhorn}; whole graph: {len(graph.graph.node)} nodes"
    )


if __name__ == "__main__":
    main()
