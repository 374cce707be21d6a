"""The release layout: names, FP8 block scales and FP4 experts read back as transformers reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from appliance.model.checkpoint import open_checkpoint
from appliance.model.release import canonical_name
from tests.helpers.v4_release import make_reference, release_name, write_release, write_stacked


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return make_reference()


@pytest.fixture(scope="module")
def state(model) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_release_names_map_back_to_state_dict_names(state: dict[str, np.ndarray]) -> None:
    for name in state:
        if ".experts." not in name:
            assert canonical_name(release_name(name)) == name
    # Final names are left alone, with or without the "model." prefix stripped by save_pretrained.
    assert canonical_name("model.norm.weight") == "model.norm.weight"
    assert (
        canonical_name("model.layers.0.self_attn.kv_norm.weight") == "model.layers.0.self_attn.kv_norm.weight"
    )
    assert canonical_name("layers.1.attn.indexer.compressor.wkv.weight") == (
        "model.layers.1.self_attn.compressor.indexer.kv_proj.weight"
    )


def test_transformers_loads_our_release_layout_to_the_same_weights(model, state, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import DeepseekV4ForCausalLM

    write_release(model, tmp_path, quantize=False)
    loaded = DeepseekV4ForCausalLM.from_pretrained(tmp_path).state_dict()
    assert set(loaded) == set(state)
    for name, value in loaded.items():
        np.testing.assert_array_equal(value.numpy(), state[name], err_msg=name)


@pytest.mark.parametrize("layout", ["release", "save_pretrained", "stacked"])
def test_unquantized_layouts_read_back_exactly(model, state, tmp_path: Path, layout: str) -> None:  # type: ignore[no-untyped-def]
    if layout == "release":
        write_release(model, tmp_path, quantize=False)
    elif layout == "stacked":
        write_stacked(model, tmp_path)
    else:
        write_stacked(model, tmp_path / "tok")
        model.save_pretrained(tmp_path)
        (tmp_path / "tokenizer.json").write_bytes((tmp_path / "tok" / "tokenizer.json").read_bytes())
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.names() == list(state)
    assert ckpt.layout == ("stacked" if layout == "stacked" else "release")
    for name in ckpt.names():
        np.testing.assert_array_equal(ckpt.tensor(name), state[name], err_msg=name)
    gate_up = "model.layers.1.mlp.experts.gate_up_proj"
    np.testing.assert_array_equal(ckpt.expert(gate_up, 3), state[gate_up][3])


def _transformers_dequant(weight: np.ndarray, scale: np.ndarray, scale_code: str) -> np.ndarray:
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize

    w = torch.from_numpy(weight)
    if weight.dtype == np.uint8:
        w = w.view(torch.float8_e4m3fn)
    s = torch.from_numpy(scale)
    if scale_code == "F8_E8M0":
        s = s.view(torch.float8_e8m0fnu)
    out = Fp8Dequantize(None)._dequantize_one(w, s, output_dtype=torch.float32)
    return out.numpy()


@pytest.mark.parametrize(
    ("ue8m0", "fp4_dtype", "suffix"),
    [(True, "I8", ".weight_scale_inv"), (False, "I8", ".weight_scale_inv"), (True, "F4", ".scale")],
)
def test_fp8_and_fp4_dequantize_as_transformers_does(  # type: ignore[no-untyped-def]
    model, state, tmp_path: Path, ue8m0: bool, fp4_dtype: str, suffix: str
) -> None:
    stored = write_release(
        model, tmp_path, quantize=True, ue8m0=ue8m0, block=(16, 16), fp4_dtype=fp4_dtype, scale_suffix=suffix
    )
    ckpt = open_checkpoint(tmp_path)
    code = "F8_E8M0" if ue8m0 else "F32"
    # A dense FP8 matrix with several 16x16 blocks.
    name = "model.layers.1.self_attn.q_b_proj.weight"
    base = release_name(name).removesuffix(".weight")
    expected = _transformers_dequant(stored[base + ".weight"], stored[base + suffix], code)
    np.testing.assert_array_equal(ckpt.tensor(name), expected)
    # FP4 experts, reassembled into transformers' stacked gate_up layout.
    gate_up = ckpt.tensor("model.layers.2.mlp.experts.gate_up_proj")
    for e in range(gate_up.shape[0]):
        parts = [
            _transformers_dequant(
                stored[f"layers.2.ffn.experts.{e}.{w}.weight"],
                stored[f"layers.2.ffn.experts.{e}.{w}{suffix}"],
                code,
            )
            for w in ("w1", "w3")
        ]
        np.testing.assert_array_equal(gate_up[e], np.concatenate(parts))
        np.testing.assert_array_equal(ckpt.expert("model.layers.2.mlp.experts.gate_up_proj", e), gate_up[e])
    # And every tensor is within quantization error of the original weights.
    for name in ckpt.names():
        value, ref = ckpt.tensor(name), state[name]
        tolerance = 0.2 if ".experts." in name else 0.07  # FP4 has 3 bits of value, FP8 e4m3 has 4
        assert np.abs(value - ref).max() <= tolerance * max(np.abs(ref).max(), 1e-6), name


@pytest.mark.parametrize("ue8m0", [True, False])
def test_transformers_fp8_loader_reads_our_release_files_as_we_do(model, tmp_path: Path, ue8m0: bool) -> None:  # type: ignore[no-untyped-def]
    """transformers' own FP8/FP4 checkpoint loader (dequantizing) and open_checkpoint agree on every tensor."""
    pytest.importorskip("accelerate")  # transformers' quantized loading needs it
    from transformers import DeepseekV4ForCausalLM, FineGrainedFP8Config

    write_release(model, tmp_path, quantize=True, ue8m0=ue8m0, block=(16, 16), with_mtp=False)
    config = FineGrainedFP8Config(dequantize=True, weight_block_size=(16, 16))
    loaded = DeepseekV4ForCausalLM.from_pretrained(tmp_path, quantization_config=config).state_dict()
    ckpt = open_checkpoint(tmp_path)
    assert set(loaded) == set(ckpt.names())
    for name, value in loaded.items():
        np.testing.assert_allclose(value.float().numpy(), ckpt.tensor(name), rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("shape", [(32, 48), (20, 24)], ids=["whole-tiles", "partial-edge-tiles"])
def test_fp8_block_scales_cover_edge_tiles(shape: tuple[int, int]) -> None:
    from appliance.model.release import dequantize_fp8
    from appliance.model.safetensors_io import fp8_e4m3_to_f32

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 0x7E, size=shape).astype(np.uint8)  # finite e4m3 codes
    scale = rng.uniform(0.5, 2.0, size=(-(-shape[0] // 16), -(-shape[1] // 16))).astype(np.float32)
    expected = fp8_e4m3_to_f32(raw).copy()
    for i in range(shape[0]):
        for j in range(shape[1]):
            expected[i, j] *= scale[i // 16, j // 16]
    np.testing.assert_array_equal(dequantize_fp8(raw, scale, (16, 16), "w"), expected)


def _bundle_experts(model, tmp_path: Path, quant: str, ue8m0: bool):  # type: ignore[no-untyped-def]
    """The release's dequantized FP4 experts of the last layer (routed scaling folded into down, as
    the graph does) and the QMoE weights of a ``quant`` bundle built from it, dequantized."""
    import onnx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from onnx import numpy_helper

    from appliance.model.bundle import build_bundle
    from appliance.model.quant import QuantizedMatrix, dequantize, interleave_gate_up

    write_release(model, tmp_path / "ckpt", quantize=True, ue8m0=ue8m0)
    ckpt = open_checkpoint(tmp_path / "ckpt")
    bundle = build_bundle(
        ckpt.path, tmp_path / "bundle", quant=quant, signing_key=Ed25519PrivateKey.generate(), version=1
    )
    graph = onnx.load(str(bundle / "model.onnx"))  # external data read from beside it
    inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    layer = f"model.layers.{ckpt.config.num_hidden_layers - 1}.mlp.experts"
    bits = 8 if quant == "int8" else 4
    scale = np.float32(ckpt.config.routed_scaling_factor)
    out = {}
    for name, expected in (
        ("gate_up_proj", interleave_gate_up(ckpt.tensor(f"{layer}.gate_up_proj"))),
        ("down_proj", ckpt.tensor(f"{layer}.down_proj") * scale),
    ):
        scales = inits[f"{layer}.{name}.scales"]
        packed = inits[f"{layer}.{name}.qweight"].reshape(*scales.shape, 32 * bits // 8)
        q = QuantizedMatrix(packed, scales, inits[f"{layer}.{name}.zp"], bits, 32, expected.shape[-1])
        out[name] = (dequantize(q), expected, scales)
    return out


@pytest.mark.parametrize("ue8m0", [True, False])
def test_int8_bundle_carries_the_release_fp4_experts_bit_exactly(model, tmp_path: Path, ue8m0: bool) -> None:  # type: ignore[no-untyped-def]
    """e2m1 x 2 is an integer in -12..12: 8-bit levels with step scale/2 hold every FP4 weight."""
    for name, (got, expected, _) in _bundle_experts(model, tmp_path, "int8", ue8m0).items():
        if ue8m0 or name == "gate_up_proj":
            np.testing.assert_array_equal(got, expected, err_msg=name)
        else:  # a float32 scale times the routed scaling factor is rounded once more than the weight
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0, err_msg=name)


def test_int4_bundle_of_fp4_experts_is_lossy_but_beats_plain_rounding(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """int4 of an FP4 release cannot be exact (25 FP4 levels, 16 int4 ones); each block's range is
    picked from a table by the block's FP4 levels, and does better than rounding to the block's range."""
    from appliance.model.quant import dequantize, quantize_blocks

    for name, (got, expected, _) in _bundle_experts(model, tmp_path, "int4", True).items():
        plain = dequantize(quantize_blocks(expected, bits=4, block_size=32, search=False))
        error = float(((got - expected) ** 2).sum())
        assert 0 < error < float(((plain - expected) ** 2).sum()), name
        assert error < 0.07**2 * float((expected**2).sum()), name
