"""A release-layout checkpoint (FP8 dense, FP4 experts) builds to a bundle computing the dequantized reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.model.bundle import build_bundle, load_bundle
from appliance.model.checkpoint import open_checkpoint
from tests.helpers.v4_onnx import StageRunner
from tests.helpers.v4_release import make_reference, write_release

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
# index_topk >= the compressed entries of the sequence below, where transformers' full forward is
# the causal definition the graphs follow (docs/bundle.md).
OVERRIDES = {"index_topk": 16, "vocab_size": 96}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Path]:
    root = tmp_path_factory.mktemp("build")
    model = make_reference(OVERRIDES, seed=3)
    write_release(model, root / "ckpt", quantize=True, ue8m0=True, block=(16, 16))
    build_bundle(root / "ckpt", root / "bundle", signing_key=KEY, version=1)
    return model, root / "ckpt", root / "bundle"


def _bundle_logits(bundle_dir: Path, ids: np.ndarray) -> np.ndarray:
    bundle = load_bundle(bundle_dir, trusted_keys=[KEY.public_key()])
    runner = StageRunner([onnx.load(str(p)) for p in bundle.graph_paths], bundle.io, max_context=128)
    return runner.prefill_and_decode(ids, len(ids) // 2)


def _reference_logits(model: torch.nn.Module, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        full = model(torch.from_numpy(ids)[None]).logits[0].numpy()
    return full[len(ids) // 2 - 1 :]


IDS = np.array([0, *range(5, 40)], dtype=np.int64)  # crosses the window (8), CSA (4) and HCA (8) boundaries


def test_release_bundle_matches_dequantized_reference(built) -> None:  # type: ignore[no-untyped-def]
    model, ckpt_dir, bundle_dir = built
    ckpt = open_checkpoint(ckpt_dir)
    dequantized = make_reference(OVERRIDES, seed=3)
    dequantized.load_state_dict({n: torch.from_numpy(ckpt.tensor(n)) for n in ckpt.names()})
    ours = _bundle_logits(bundle_dir, IDS)
    np.testing.assert_allclose(ours, _reference_logits(dequantized, IDS), atol=1e-4, rtol=0)
    # Against the unquantized original the difference is the release's FP8/FP4 rounding only (FP4
    # experts with random weights: 0.91-0.99 per position here; a misread layout gives ~0).
    original = _reference_logits(model, IDS)
    cosine = (ours * original).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(original, axis=-1)
    assert cosine.min() > 0.85 and cosine.mean() > 0.95


def test_stages_and_dtypes_build_the_same_model(built, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, ckpt_dir, bundle_dir = built
    build_bundle(ckpt_dir, tmp_path / "s3", signing_key=KEY, version=1, stages=3)
    assert sorted(p.name for p in (tmp_path / "s3").iterdir()) == [
        "bundle.json", "manifest.json", "manifest.sig", "stage0.onnx", "stage0.onnx.data", "stage1.onnx",
        "stage1.onnx.data", "stage2.onnx", "stage2.onnx.data", "tokenizer.json"]  # fmt: skip
    # Each stage's graph refers to its own data file only.
    for k in range(3):
        graph = onnx.load(str(tmp_path / "s3" / f"stage{k}.onnx"), load_external_data=False).graph
        locations = {e.value for t in graph.initializer for e in t.external_data if e.key == "location"}
        assert locations == {f"stage{k}.onnx.data"}
    np.testing.assert_allclose(
        _bundle_logits(tmp_path / "s3", IDS), _bundle_logits(bundle_dir, IDS), atol=1e-5
    )


@pytest.mark.parametrize("quant", ["none", "int4"])
def test_expert_stacks_stream_to_the_data_file(  # type: ignore[no-untyped-def]
    built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quant: str
) -> None:
    """A layer's experts go to the weight file one expert at a time (a real V4 layer's are ~13 GB in
    fp16), so no stack of them is ever held: the written bytes must still be exactly the tensor."""
    from appliance.model import bundle as bundle_module

    streamed: list[str] = []
    real = bundle_module.ExternalData.stream

    def spy(self, name, dtype, shape):  # type: ignore[no-untyped-def]
        stream = real(self, name, dtype, shape)
        if stream is not None:
            streamed.append(name)
        return stream

    monkeypatch.setattr(bundle_module.ExternalData, "stream", spy)
    _, ckpt_dir, _ = built
    out = build_bundle(ckpt_dir, tmp_path / quant, signing_key=KEY, version=1, quant=quant)
    config = open_checkpoint(ckpt_dir).config
    # moe="ort" (the default): the stacks com.microsoft.MoE reads, gate/up interleaved.
    suffixes = (".experts.gate_up_proj.interleaved", ".experts.down_proj.scaled") if quant == "none" else (
        ".experts.gate_up_proj.qweight", ".experts.down_proj.qweight")  # fmt: skip
    experts = {f"model.layers.{i}.mlp{s}" for i in range(config.num_hidden_layers) for s in suffixes}
    assert experts <= set(streamed)
    # The float projections' transposed copies (x @ W.T) are written tile by tile too: the LM head
    # is V4's largest matrix, and no second copy of it is held.
    others = set(streamed) - experts
    assert "lm_head.weight" in others and all(n.endswith(".weight") for n in others)
    # And the bundle computes what graphs holding each stack in one piece (no sink) compute.
    from appliance.model.graph import build_graphs

    whole = build_graphs(open_checkpoint(ckpt_dir), quant=quant)
    runner = StageRunner(whole, load_bundle(out, trusted_keys=[KEY.public_key()]).io, max_context=128)
    np.testing.assert_array_equal(_bundle_logits(out, IDS), runner.prefill_and_decode(IDS, len(IDS) // 2))
