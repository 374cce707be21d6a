"""quant.py's packing is what ONNX Runtime's MatMulNBits and QMoE read: run one-node graphs and compare."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from appliance.engine.runner import exact_qmoe_activations
from appliance.model import quant
from appliance.model.quant import (
    QuantizedMatrix,
    dequantize,
    interleave_gate_up,
    quantize_blocks,
    quantize_experts,
)
from shared.errors import ModelError


def _run(
    node: onnx.NodeProto, inits: list[TensorProto], feeds: dict[str, np.ndarray], out_shape: list[int]
) -> np.ndarray:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    exact_qmoe_activations()  # as the engine's runner does
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["y"], feeds)[0])


@pytest.mark.parametrize(
    ("bits", "block_size", "k"), [(4, 32, 96), (4, 128, 256), (8, 32, 96), (8, 128, 200), (4, 32, 70)]
)
def test_matmulnbits_matches_numpy_dequant_matmul(bits: int, block_size: int, k: int) -> None:
    rng = np.random.default_rng(bits * 1000 + k)
    n = 24
    w = rng.normal(size=(n, k)).astype(np.float32)
    x = rng.normal(size=(3, k)).astype(np.float32)
    q = quantize_blocks(w, bits=bits, block_size=block_size)
    node = helper.make_node(
        "MatMulNBits",
        ["x", "B", "scales", "zp"],
        ["y"],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=bits,
        block_size=block_size,
        accuracy_level=0,
    )
    inits = [
        numpy_helper.from_array(q.packed, "B"),
        numpy_helper.from_array(q.scales.reshape(-1), "scales"),
        numpy_helper.from_array(q.zero_points.reshape(-1), "zp"),
    ]
    y = _run(node, inits, {"x": x}, [3, n])
    expected = x @ dequantize(q).T
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    # Plain rounding is tight: every weight within half a step.
    plain = quantize_blocks(w, bits=bits, block_size=block_size, search=False)
    step = plain.scales.repeat(block_size, axis=-1)[:, :k]
    assert np.all(np.abs(dequantize(plain) - w) <= step / 2 + 1e-6)


def _block_errors(q: QuantizedMatrix, w: np.ndarray) -> np.ndarray:
    pad = q.scales.shape[-1] * q.block_size - w.shape[-1]
    diff = np.pad(dequantize(q) - w, ((0, 0), (0, pad)))
    return np.square(diff).reshape(*q.scales.shape, q.block_size).sum(-1)


@pytest.mark.parametrize("k", [64, 70])
def test_int4_range_search_never_loses_to_plain_rounding(k: int) -> None:
    rng = np.random.default_rng(k)
    w = rng.normal(size=(64, k)).astype(np.float32)
    searched = quantize_blocks(w, bits=4, block_size=32)
    plain = quantize_blocks(w, bits=4, block_size=32, search=False)
    ours, theirs = _block_errors(searched, w), _block_errors(plain, w)
    assert np.all(ours <= theirs + 1e-6)
    assert ours.sum() < 0.95 * theirs.sum()
    # 8 bits is plain rounding unless asked.
    assert np.array_equal(
        dequantize(quantize_blocks(w, bits=8, block_size=32)),
        dequantize(quantize_blocks(w, bits=8, block_size=32, search=False)),
    )


def test_quantization_in_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    w = np.random.default_rng(5).normal(size=(3, 40, 64)).astype(np.float32)
    whole = quantize_blocks(w, bits=4, block_size=32)
    monkeypatch.setattr(quant, "_CHUNK", 64)  # two blocks a pass
    chunked = quantize_blocks(w, bits=4, block_size=32)
    for a, b in zip(
        (whole.packed, whole.scales, whole.zero_points),
        (chunked.packed, chunked.scales, chunked.zero_points),
        strict=True,
    ):
        assert np.array_equal(a, b)


def test_zero_weights_stay_zero() -> None:
    w = np.zeros((4, 64), np.float32)
    w[0, 5] = 1.0
    for bits in (4, 8):
        back = dequantize(quantize_blocks(w, bits=bits, block_size=32))
        assert back[1:].max() == 0.0 and back[0, 6:].max() == 0.0


@pytest.mark.parametrize("bits", [4, 8])
def test_qmoe_matches_numpy_experts(bits: int) -> None:
    rng = np.random.default_rng(bits)
    experts, hidden, inter, tokens, top_k = 4, 64, 32, 5, 2
    fc1 = rng.normal(size=(experts, 2 * inter, hidden)).astype(np.float32) * 0.3  # [gate | up]
    fc2 = rng.normal(size=(experts, hidden, inter)).astype(np.float32) * 0.3
    # ONNX Runtime's CPU QMoE reads fused SwiGLU weights interleaved (gate row, up row, ...).
    q1 = quantize_experts(interleave_gate_up(fc1), bits=bits, block_size=32)
    q2 = quantize_experts(fc2, bits=bits, block_size=32)
    x = rng.normal(size=(tokens, hidden)).astype(np.float32)
    logits = rng.normal(size=(tokens, experts)).astype(np.float32)
    node = helper.make_node(
        "QMoE",
        ["x", "router", "w1", "s1", "", "w2", "s2", "", "", "", "", "zp1", "zp2"],
        ["y"],
        domain="com.microsoft",
        k=top_k,
        expert_weight_bits=bits,
        block_size=32,
        activation_type="swiglu",
        swiglu_fusion=1,
        normalize_routing_weights=1,
        activation_alpha=1.0,
        activation_beta=0.0,
        quant_type="int",
    )
    inits = [
        numpy_helper.from_array(q1.flat_packed(), "w1"),
        numpy_helper.from_array(q1.scales, "s1"),
        numpy_helper.from_array(q2.flat_packed(), "w2"),
        numpy_helper.from_array(q2.scales, "s2"),
        numpy_helper.from_array(q1.zero_points, "zp1"),
        numpy_helper.from_array(q2.zero_points, "zp2"),
    ]
    y = _run(node, inits, {"x": x, "router": logits}, [tokens, hidden])
    d1, d2 = dequantize(q1), dequantize(q2)
    d1 = np.concatenate([d1[:, 0::2], d1[:, 1::2]], axis=1)  # back to [gate | up]
    expected = np.zeros_like(x)
    for t in range(tokens):
        chosen = np.argsort(-logits[t], kind="stable")[:top_k]
        weights = np.exp(logits[t, chosen] - logits[t, chosen].max())
        weights /= weights.sum()
        for e, wgt in zip(chosen, weights, strict=True):
            h = d1[e] @ x[t]
            gate, up = h[:inter], h[inter:]
            act = gate / (1 + np.exp(-gate)) * up
            expected[t] += wgt * (d2[e] @ act)
    # At 8 bits only with exact_qmoe_activations (the runner's setting): ONNX Runtime's default
    # would round the activations to int8 and miss by ~1e-2.
    np.testing.assert_allclose(y, expected, rtol=1e-3, atol=2e-3)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ModelError, match="bits 3"):
        quantize_blocks(np.ones((2, 32), np.float32), bits=3, block_size=32)
    with pytest.raises(ModelError, match="block size 48"):
        quantize_blocks(np.ones((2, 32), np.float32), bits=4, block_size=48)
    with pytest.raises(ModelError, match="multiple of block size"):
        quantize_experts(np.ones((2, 4, 40), np.float32), bits=4, block_size=32)


def test_blocks_on_a_grid_are_kept_exactly() -> None:
    rng = np.random.default_rng(9)
    e2m1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float32)
    # FP4-style blocks: e2m1 values with a sign, times one scale per 32 inputs (any float scale).
    values = e2m1[rng.integers(0, 8, size=(16, 64))] * rng.choice([-1, 1], size=(16, 64))
    w = (values * np.repeat(rng.uniform(0.01, 2, size=(16, 2)), 32, axis=1)).astype(np.float32)
    np.testing.assert_allclose(dequantize(quantize_blocks(w, bits=8, block_size=32)), w, rtol=1e-6, atol=0)
    # Small integers fit 4 bits too; ordinary floats are rounded as before.
    ints = rng.integers(-8, 8, size=(4, 32)).astype(np.float32) * np.float32(0.25)
    assert np.array_equal(dequantize(quantize_blocks(ints, bits=4, block_size=32)), ints)
    noisy = w + rng.normal(size=w.shape).astype(np.float32) * 1e-3
    assert np.abs(dequantize(quantize_blocks(noisy, bits=8, block_size=32)) - noisy).max() > 1e-4


def test_fp4_weights_map_to_levels_without_dequantizing() -> None:
    from appliance.model.release import Mxfp4

    rng = np.random.default_rng(4)
    codes = rng.integers(0, 256, (6, 64), dtype=np.uint8)  # 6 x 128 e2m1 values
    scale = np.ldexp(np.float32(1), rng.integers(-9, -3, (6, 4))).astype(np.float32)
    fp4 = Mxfp4(codes, scale) * np.float32(1.5)
    weight = fp4.dequantize()
    q8 = quantize_blocks(fp4, bits=8, block_size=32)
    np.testing.assert_array_equal(dequantize(q8), weight)
    np.testing.assert_array_equal(interleave_gate_up(fp4).dequantize(), interleave_gate_up(weight))
    # 4 bits: a block whose FP4 levels (value x 2) span at most 16 integers is kept exactly...
    narrow = codes.copy()
    narrow[0] &= 0x33  # row 0: codes 0-3 only (values 0..1.5): levels 0..3
    narrow[1] = (narrow[1] & 0x33) | 0x88  # row 1: codes 8-11 only (values -0..-1.5)
    exact = Mxfp4(narrow, scale)
    np.testing.assert_array_equal(
        dequantize(quantize_blocks(exact, bits=4, block_size=32))[:2], exact.dequantize()[:2]
    )
    # ...and on FP4 codes of Gaussian weights the table's ranges beat rounding to each block's range.
    from tests.helpers.v4_release import quantize_fp4

    gaussian, stored, _ = quantize_fp4(rng.standard_normal((64, 1024)).astype(np.float32), True)
    fp4 = Mxfp4(gaussian.view(np.uint8), np.ldexp(np.float32(1), stored.astype(np.int32) - 127))
    weight = fp4.dequantize()
    error = float(((dequantize(quantize_blocks(fp4, bits=4, block_size=32)) - weight) ** 2).mean())
    plain = float(
        ((dequantize(quantize_blocks(weight, bits=4, block_size=32, search=False)) - weight) ** 2).mean()
    )
    assert error < 0.06**2 * float((weight**2).mean()) and error < plain
    # Other block sizes go through the float path.
    np.testing.assert_allclose(dequantize(quantize_blocks(fp4, bits=8, block_size=64)), weight, atol=0.02)


def test_int4_grid_blocks_are_kept_whatever_their_smallest_level() -> None:
    # k * s with k in -8..7 (what train_demo_model.py --qat-int4 stores), including blocks whose
    # smallest magnitude is 4 to 8 steps: the step is found by dividing it by up to 8.
    rng = np.random.default_rng(11)
    # Steps of 5 significant bits, as the trainer's (every k * s exact in bf16, and k * s / k == s).
    mantissa, exponent = np.frexp(rng.uniform(1e-3, 0.1, size=(64, 1)).astype(np.float32))
    steps = np.ldexp(np.round(mantissa * 32) / 32, exponent).astype(np.float32)
    levels = rng.integers(-8, 8, size=(64, 32)).astype(np.float32)
    for row, smallest in enumerate(range(4, 9)):
        levels[row] = rng.choice([v for v in range(-8, 8) if abs(v) >= smallest or v == 0], size=32)
        levels[row, 0] = -8 if smallest == 8 else smallest
    w = (levels * steps).astype(np.float32)
    for weight in (w, w * np.float32(1.5)):  # the builder scales the down projection by routed_scaling_factor
        assert np.array_equal(dequantize(quantize_blocks(weight, bits=4, block_size=32)), weight)
        assert np.array_equal(dequantize(quantize_blocks(weight, bits=8, block_size=32)), weight)


def test_fp8_weights_map_to_8_bit_levels_by_table() -> None:
    from appliance.model.release import Fp8

    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (96, 256), dtype=np.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0x38  # no NaN codes
    fp8 = Fp8(codes, rng.uniform(0.01, 1, (2, 2)).astype(np.float32), (64, 128))  # edge tiles partial
    weight = fp8.dequantize()
    q = quantize_blocks(fp8, bits=8, block_size=32)
    step = np.repeat(q.scales, 32, axis=-1)
    assert (np.abs(dequantize(q) - weight) <= step * (0.5 + 1e-5)).all()  # ties land on half a step
    # The float path's rounding (to each block's range), up to ties and float rounding of the step.
    plain = quantize_blocks(weight, bits=8, block_size=32, search=False)
    np.testing.assert_allclose(q.scales, plain.scales, rtol=1e-6)
    assert (np.abs(q.packed.astype(int) - plain.packed) <= 1).all()
    assert (q.packed == plain.packed).mean() > 0.95  # e4m3 values often land on exact ties
    ours, theirs = (float(((dequantize(x) - weight) ** 2).sum()) for x in (q, plain))
    assert ours < 1.01 * theirs
    codes[0, 0] = 0x7F  # a NaN code: the float path takes the tensor
    nan = Fp8(codes, fp8.scale, fp8.block)
    with np.errstate(invalid="ignore"):
        got, expected = (quantize_blocks(w, bits=8, block_size=32) for w in (nan, nan.dequantize()))
    np.testing.assert_array_equal(got.packed, expected.packed)
