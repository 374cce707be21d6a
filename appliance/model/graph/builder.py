"""The graph-builder base: nodes, constants, weights and the few helpers every concern shares.

Nodes get path-style names (``/model/layers.3/attn/q_a_proj/MatMul``) and outputs named after their
node, so a graph reads like the module tree it came from. Constants are initializers created once and
shared; per-graph derived tensors (rotary tables, masks, write indices) are memoised with ``shared``
so a 43-layer graph computes each once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from appliance.model.config import V4Config
from appliance.model.release import Fp8
from shared.errors import ModelError

__all__ = [
    "ACT_DTYPES",
    "MATMUL_ACCURACY",
    "QUANT_BITS",
    "Checkpoint",
    "GraphBuilder",
    "TensorStream",
    "WeightSink",
    "transpose_2d",
]

OPSET = 23
MS_DOMAIN = "com.microsoft"

# bundle dtype label -> (numpy dtype used to hold weights before conversion, ONNX element type)
ACT_DTYPES: dict[str, int] = {
    "fp32": TensorProto.FLOAT,
    "fp16": TensorProto.FLOAT16,
    "bf16": TensorProto.BFLOAT16,
}

# --quant label -> (routed-expert bits, other projections' bits); 0: float weights. Quantized graphs
# use com.microsoft QMoE for the routed experts and MatMulNBits for the large projections. "int4" keeps
# the projections outside the routed experts (attention, shared expert: ~2% of a V4 checkpoint's
# weights, but every token passes through them) at 8 bits — DeepSeek's own release makes the same split
# (FP4 experts, FP8 elsewhere), as llama.cpp's Q4_K_M mixes do.
QUANT_BITS: dict[str, tuple[int, int]] = {"none": (0, 0), "int8": (8, 8), "int4": (4, 8)}
QUANT_BLOCK = 32
# MatMulNBits' accuracy_level: the lowest precision its CPU kernel may compute in. 4 (int8: the
# activations quantized per block, the weights' integers multiplied as they are) is what
# onnxruntime-genai sets for CPU. Without it the CPU kernel runs in fp32 and at 8 bits dequantizes the
# whole weight on every call (a 32768 x 1024 projection: 918 ms a call against 8.4 ms, measured here
# with ORT 1.32). The CUDA kernel ignores the attribute. 0 leaves it unset (fp32 on CPU).
MATMUL_ACCURACY = 4

#: Turns a named numpy weight into the TensorProto the graph holds. The bundle writer passes one that
#: writes the bytes to external data at once and returns a reference, so a build never holds more
#: than the tensor in hand. A sink may also offer ``stream(name, dtype, shape) -> TensorStream | None``
#: for a tensor written in consecutive parts (a layer's stacked experts).
WeightSink = Callable[[str, np.ndarray], TensorProto]


class TensorStream(Protocol):
    """One initializer written in consecutive parts along its first axis (see ``expert_stack``): a
    part is one entry of that axis, or (where the sink streams) a run of them."""

    def write(self, part: np.ndarray) -> None: ...

    def finish(self) -> TensorProto: ...


class _StackInMemory:
    """A TensorStream kept in memory and handed to the sink whole (small stacks, or a sink that
    cannot stream)."""

    def __init__(self, sink: WeightSink, name: str, count: int) -> None:
        self._sink, self._name, self._count = sink, name, count
        self._stack: np.ndarray | None = None
        self._written = 0

    def write(self, part: np.ndarray) -> None:
        if self._stack is None:
            self._stack = np.empty((self._count, *part.shape), part.dtype)
        self._stack[self._written] = part
        self._written += 1

    def finish(self) -> TensorProto:
        if self._stack is None or self._written != self._count:
            raise ModelError(f"{self._name}: {self._written} of {self._count} parts written")
        return self._sink(self._name, self._stack)


class Checkpoint(Protocol):
    """What the builder reads: the architecture and dequantized float32 tensors by transformers name."""

    @property
    def config(self) -> V4Config: ...

    def tensor(self, name: str) -> np.ndarray: ...


def _default_sink(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name)


def to_onnx_dtype(array: np.ndarray, elem_type: int) -> np.ndarray:
    """Convert a float32 array to the storage numpy dtype of ``elem_type`` (bf16 goes through ml_dtypes)."""
    if elem_type == TensorProto.FLOAT:
        return np.ascontiguousarray(array, dtype=np.float32)
    if elem_type == TensorProto.FLOAT16:
        return np.ascontiguousarray(array, dtype=np.float16)
    import ml_dtypes  # onnx depends on it; only bf16 builds need it

    return np.ascontiguousarray(array.astype(ml_dtypes.bfloat16))


def transpose_2d(array: np.ndarray, tile: int = 64) -> np.ndarray:
    """``array.T`` as a new contiguous array, copied tile by tile: numpy's plain transposing copy
    walks one side with a stride of a whole row, ~3x slower on a 8192 x 4096 float32 matrix (265 ms
    against 88 ms here with 64 x 64 tiles; 512 x 512 tiles, which overflow L2, took 246 ms) — at V4
    sizes most of a float build was that copy."""
    rows, cols = array.shape
    out = np.empty((cols, rows), array.dtype)
    for i in range(0, rows, tile):
        for j in range(0, cols, tile):
            out[j : j + tile, i : i + tile] = array[i : i + tile, j : j + tile].T
    return out


class GraphBuilder:
    """Accumulates one ONNX graph; subclasses add ``make_*`` methods per concern."""

    def __init__(
        self,
        ckpt: Checkpoint,
        *,
        dtype: str = "fp32",
        quant: str = "none",
        weight_sink: WeightSink | None = None,
        accuracy_level: int = MATMUL_ACCURACY,
    ) -> None:
        if dtype not in ACT_DTYPES:
            raise ModelError(f"unsupported dtype {dtype!r} (choose from {', '.join(ACT_DTYPES)})")
        if quant not in QUANT_BITS:
            raise ModelError(f"unsupported quant {quant!r} (choose from {', '.join(QUANT_BITS)})")
        if accuracy_level not in (0, 1, 2, 3, 4):
            raise ModelError(f"unsupported MatMulNBits accuracy_level {accuracy_level!r} (choose from 0-4)")
        self.expert_bits, self.quant_bits = QUANT_BITS[quant]
        self.accuracy_level = accuracy_level
        self.ckpt = ckpt
        self.config = ckpt.config
        self.dtype = dtype
        self.act = ACT_DTYPES[dtype]
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._sink = weight_sink or _default_sink
        self._consts: dict[Hashable, str] = {}
        self._shared: dict[Hashable, Any] = {}
        self._node_names: set[str] = set()

    # ---- nodes ---------------------------------------------------------------------------------
    def op(self, op_type: str, name: str, inputs: Sequence[str], *, domain: str = "", **attrs: Any) -> str:
        """Add a one-output node named ``name`` (a path); returns its output's name."""
        return self.op_n(op_type, name, inputs, 1, domain=domain, **attrs)[0]

    def op_n(
        self, op_type: str, name: str, inputs: Sequence[str], n_out: int, *, domain: str = "", **attrs: Any
    ) -> list[str]:
        if name in self._node_names:
            raise AssertionError(f"duplicate node name {name}")  # a builder bug, not bad input
        self._node_names.add(name)
        outs = [f"{name}/output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, domain=domain, **attrs))
        return outs

    def shared(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """Build a per-graph derived value once (rotary tables, masks, write indices)."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    # ---- constants and weights -----------------------------------------------------------------
    def const(self, value: Any, dtype: Any = None) -> str:
        """A small constant initializer, created once per distinct value."""
        array = np.asarray(value, dtype=dtype)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = f"/const/{len(self._consts)}"
            self.initializers.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def const_act(self, value: Any) -> str:
        """A float constant in the activation dtype."""
        return self.const_tensor(np.asarray(value, dtype=np.float32))

    def const_tensor(self, array: np.ndarray) -> str:
        stored = to_onnx_dtype(array, self.act)
        key = ("act", stored.dtype.str, stored.shape, stored.tobytes())
        if key not in self._consts:
            name = f"/const/{len(self._consts)}"
            self.initializers.append(numpy_helper.from_array(stored, name))
            self._consts[key] = name
        return self._consts[key]

    def weight(self, name: str, array: np.ndarray, *, keep_fp32: bool = False) -> str:
        """A named weight initializer (activation dtype unless ``keep_fp32``), through the sink."""
        stored = to_onnx_dtype(array, TensorProto.FLOAT if keep_fp32 else self.act)
        self.initializers.append(self._sink(name, stored))
        return name

    def weight_transposed(self, name: str, array: np.ndarray, tile: int = 512) -> str:
        """A named weight initializer holding ``array.T`` (activation dtype). Where the sink can
        stream, it is transposed and written ``tile`` rows at a time, so the build never holds a
        second copy of the largest matrices (the LM head: 2.1 GB in float32 at V4's vocabulary)."""
        rows, cols = array.shape
        open_stream = getattr(self._sink, "stream", None)
        dtype = to_onnx_dtype(array[:1, :1], self.act).dtype
        stream = open_stream(name, dtype, (cols, rows)) if open_stream else None
        if stream is None:
            return self.weight(name, transpose_2d(array))
        for start in range(0, cols, tile):
            stream.write(to_onnx_dtype(transpose_2d(array[:, start : start + tile]), self.act))
        self.initializers.append(stream.finish())
        return name

    def raw_weight(self, name: str, array: np.ndarray) -> str:
        """A named initializer stored as given (integer tables, packed quantized weights)."""
        self.initializers.append(self._sink(name, np.ascontiguousarray(array)))
        return name

    def tensor(self, name: str, shape: Sequence[int] | None = None) -> np.ndarray:
        """A checkpoint tensor, shape-checked: a ModelError names it when it is missing or misshapen."""
        try:
            value = self.ckpt.tensor(name)
        except KeyError:
            raise ModelError(f"checkpoint is missing tensor {name!r}") from None
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ModelError(f"tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        return value

    def expert_stack(
        self,
        name: str,
        shape: tuple[int, ...],
        transform: Callable[[np.ndarray], tuple[np.ndarray, ...]],
        outputs: Sequence[str],
    ) -> list[str]:
        """Initializers ``outputs[i]`` = ``transform(expert)[i]`` stacked over the routed experts of
        the stacked tensor ``name``; returns ``outputs``.

        Reads one expert at a time when the checkpoint offers ``expert(name, index)`` (the bundle
        reader does). The first output — the weights themselves, by far the largest — goes to the
        sink expert by expert when the sink can stream (the bundle writer's can): a real V4 layer's
        experts are ~13 GB in fp16, so they are never all in memory. The other outputs (block
        scales, zero points: 1/8 of the weights or less) are stacked in memory.
        """
        n = self.config.n_routed_experts
        read = getattr(self.ckpt, "expert", None)
        # A quantized build's transforms end in quant.quantize_blocks, which maps FP4 experts as the
        # release stores them (quant.Mxfp4) code by code: they are not dequantized first.
        read_fp4 = getattr(self.ckpt, "expert_mxfp4", None) if self.expert_bits else None
        full = None if read is not None else self.tensor(name, (n, *shape))
        stacks: list[TensorStream] = []
        for index in range(n):
            fp4 = read_fp4(name, index) if read_fp4 is not None else None
            if fp4 is not None:
                part = fp4
            elif full is not None:
                part = full[index]
            else:
                assert read is not None
                try:
                    part = read(name, index)
                except KeyError:
                    raise ModelError(f"checkpoint is missing tensor {name!r}") from None
                if tuple(part.shape) != tuple(shape):
                    raise ModelError(
                        f"tensor {name!r} expert {index} has shape {tuple(part.shape)}, expected {shape}"
                    )
            outs = transform(part if fp4 is not None else np.asarray(part, dtype=np.float32))
            if index == 0:
                open_stream = getattr(self._sink, "stream", None)
                first = open_stream(outputs[0], outs[0].dtype, (n, *outs[0].shape)) if open_stream else None
                stacks = [first or _StackInMemory(self._sink, outputs[0], n)] + [
                    _StackInMemory(self._sink, output, n) for output in outputs[1:]
                ]
            for stack, out in zip(stacks, outs, strict=True):
                stack.write(out)
        # The streamed one first: the others' bytes go to the same file after it.
        self.initializers.extend(stack.finish() for stack in stacks)
        return list(outputs)

    def stored(self, array: np.ndarray) -> np.ndarray:
        """``array`` in the activation dtype's storage form (for ``raw_weight``)."""
        return to_onnx_dtype(array, self.act)

    # ---- graph I/O -----------------------------------------------------------------------------
    def add_input(self, name: str, elem_type: int, shape: Sequence[int | str]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def add_output(self, name: str, source: str, elem_type: int, shape: Sequence[int | str]) -> None:
        self.op("Identity", f"/output/{name}", [source])
        self.nodes[-1].output[0] = name
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    # ---- shared small helpers ------------------------------------------------------------------
    def to_f32(self, name: str, x: str) -> str:
        """Cast an activation to float32 (a no-op in fp32 graphs)."""
        return x if self.act == TensorProto.FLOAT else self.op("Cast", name, [x], to=TensorProto.FLOAT)

    def to_act(self, name: str, x: str) -> str:
        """Cast a float32 value back to the activation dtype (a no-op in fp32 graphs)."""
        return x if self.act == TensorProto.FLOAT else self.op("Cast", name, [x], to=self.act)

    def make_rms_norm(
        self, path: str, x: str, size: int, *, weight: str | None = None, scale: float | np.ndarray = 1.0
    ) -> str:
        """RMSNorm over the last axis, computed in float32 (ONNX RMSNormalization, stash_type=1).

        ``weight`` is the checkpoint name of the norm's weight (None: the unweighted norm); ``scale``
        (a number, or one per channel) multiplies it, folding a following constant per-channel
        scaling into the norm for free.
        """
        factor = np.broadcast_to(np.asarray(scale, np.float32), (size,))
        if weight is None:
            w_name = self.const_tensor(np.array(factor))
        else:
            w_name = self.weight(weight, self.tensor(weight, (size,)) * factor)
        return self.op(
            "RMSNormalization",
            f"{path}/RMSNormalization",
            [x, w_name],
            axis=-1,
            epsilon=self.config.rms_norm_eps,
            stash_type=1,
        )

    def make_linear(
        self, path: str, x: str, name: str, shape: tuple[int, int], *, quantize: bool = True
    ) -> str:
        """``x @ W.T`` for the transformers ``[out, in]`` weight ``name``. An FP8 weight of an 8-bit
        quantized build is handed to quant.quantize_blocks as stored (release.Fp8), not dequantized."""
        read_fp8 = getattr(self.ckpt, "tensor_fp8", None) if quantize and self.quant_bits == 8 else None
        fp8 = read_fp8(name) if read_fp8 is not None else None
        if fp8 is not None and fp8.shape == tuple(shape):
            return self.make_matmul(path, x, name, fp8)
        return self.make_matmul(path, x, name, self.tensor(name, shape), quantize=quantize)

    def make_matmul(
        self, path: str, x: str, name: str, weight: np.ndarray | Fp8, *, quantize: bool = True
    ) -> str:
        """``x @ weight.T`` for an ``[out, in]`` array: MatMul on the transposed weight, or — in a
        quantized build, unless ``quantize=False`` (routers, compressors: precision-sensitive and
        small) — MatMulNBits on the block-quantized weight (initializers ``name.qweight/.scales/.zp``).
        """
        if not (quantize and self.quant_bits):
            w = self.weight_transposed(name, np.asarray(weight))
            return self.op("MatMul", f"{path}/MatMul", [x, w])
        from appliance.model.quant import quantize_blocks

        q = quantize_blocks(weight, bits=self.quant_bits, block_size=QUANT_BLOCK)
        return self.op(
            "MatMulNBits",
            f"{path}/MatMulNBits",
            [
                x,
                self.raw_weight(f"{name}.qweight", q.packed),
                self.weight(f"{name}.scales", q.scales.reshape(-1)),
                self.raw_weight(f"{name}.zp", q.zero_points.reshape(-1)),
            ],
            domain=MS_DOMAIN,
            K=q.k,
            N=q.n,
            bits=q.bits,
            block_size=q.block_size,
            accuracy_level=self.accuracy_level,
        )

    def build_model(self, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
            producer_name="enclave-model-builder",
        )
        model.ir_version = 10
        return model
