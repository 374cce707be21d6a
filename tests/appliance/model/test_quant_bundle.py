"""int8 / int4 bundles: built through the bundle writer, quantized ops present, logits close to fp32.

The demo model's weights are random: its top-1 flips under any perturbation (thin routing and indexer
top-k margins), so the bounds here are on cosine similarity, which tracks the quantization error
itself. Top-1 agreement is asserted on a trained model in test_quant_accuracy.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.model.bundle import build_bundle, load_bundle
from appliance.model.demo import write_demo_checkpoint
from tests.helpers.v4_onnx import StageRunner

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
IDS = np.array([0, *np.random.default_rng(5).integers(10, 500, size=95)], dtype=np.int64)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quant")
    ckpt = write_demo_checkpoint(root / "ckpt")
    out = {}
    for quant in ("none", "int8", "int4"):
        out[quant] = build_bundle(ckpt, root / quant, quant=quant, signing_key=KEY, version=1)
    return out


def _logits(bundle_dir: Path) -> np.ndarray:
    bundle = load_bundle(bundle_dir, trusted_keys=[KEY.public_key()])
    runner = StageRunner([onnx.load(str(p)) for p in bundle.graph_paths], bundle.io, max_context=128)
    return runner.prefill_and_decode(IDS, 16)


@pytest.mark.parametrize(("quant", "expert_bits", "min_mean_cosine"), [("int8", 8, 0.99), ("int4", 4, 0.85)])
def test_quantized_bundle(
    bundles: dict[str, Path], quant: str, expert_bits: int, min_mean_cosine: float
) -> None:
    bundle = load_bundle(bundles[quant], trusted_keys=[KEY.public_key()])
    info = bundle.info["quantization"]
    assert info["routed_experts"] == {"bits": expert_bits, "op": "QMoE"}
    assert info["projections"] == {"bits": 8, "op": "MatMulNBits"}
    bits_in_graphs = {
        (n.op_type, a.i)
        for p in bundle.graph_paths
        for n in onnx.load(str(p), load_external_data=False).graph.node
        for a in n.attribute
        if a.name in ("bits", "expert_weight_bits")
    }
    assert bits_in_graphs == {("QMoE", expert_bits), ("MatMulNBits", 8)}
    # Every MatMulNBits may compute in int8 on CPU (accuracy_level 4): else ORT's CPU kernel
    # dequantizes the whole 8-bit weight to fp32 on every call.
    levels = [
        {a.name: a.i for a in n.attribute}.get("accuracy_level")
        for p in bundle.graph_paths
        for n in onnx.load(str(p), load_external_data=False).graph.node
        if n.op_type == "MatMulNBits"
    ]
    assert levels and set(levels) == {4}
    ops = {
        n.op_type for p in bundle.graph_paths for n in onnx.load(str(p), load_external_data=False).graph.node
    }
    assert {"MatMulNBits", "QMoE"} <= ops
    # Packed weights are smaller than the fp32 ones they replace.
    sizes = {q: sum(f.stat().st_size for f in b.iterdir()) for q, b in bundles.items()}
    assert sizes[quant] < sizes["none"]
    ref, got = _logits(bundles["none"]), _logits(bundles[quant])
    cosine = (ref * got).sum(-1) / np.linalg.norm(ref, axis=-1) / np.linalg.norm(got, axis=-1)
    top1 = float((ref.argmax(-1) == got.argmax(-1)).mean())
    print(
        f"{quant}: top-1 agreement {top1:.2%}, logit cosine mean {cosine.mean():.5f} min {cosine.min():.5f}"
    )
    assert cosine.mean() >= min_mean_cosine
