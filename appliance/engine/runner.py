"""The runner: the only code that touches ONNX Runtime sessions, OrtValues and cache buffers.

It follows the graph contract in docs/bundle.md. Each pipeline stage is one session on one device
(CPU, or GPU ``device_ids[k]``); a stage owns the cache state of its layers in preallocated buffers
of ``num_slots`` rows, one row per cache slot. A decode step updates them at fixed addresses:

    in place (CPU default)   state [num_slots, ...] ──past──> session ──present──> the same buffer
    ping-pong (CUDA default) set A ──past──> session ──present──> set B, then swap A and B

- Decode feeds the first ``n`` rows, ``n`` = highest running slot + 1 (the scheduler hands out the
  lowest free slot, so this is the running count unless a low slot just finished). Idle rows inside
  the prefix run at position 0 and are ignored. Everything is bound by address with IO binding, so
  cache state never leaves the device; bindings are built once per (n, parity) and reused.
- Prefill runs one sequence (rows in a call share T) in chunks, never aliasing: the first chunk
  reads a row of zeros that is never written, and the chunks' outputs alternate between a one-row
  scratch set and the slot's row so that the last one lands in the slot's row. No copy, no clearing.
- Fork (``n`` choices of one prompt): each state row of one slot is copied into another slot's row
  on the device, by a one-node Identity graph bound to the two rows' addresses — the same code on
  CPU and CUDA, and no round trip through the host.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
import onnx.helper
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from appliance.engine.sequence import Sequence
from shared.errors import ConfigError, EngineError, ModelError

__all__ = ["OrtRunner", "StageSpec", "read_io"]

# What a failing run raises (ORT's pybind exceptions do not share a base below Exception).
_ORT_ERRORS = (_ort_state.Fail, _ort_state.InvalidArgument, _ort_state.RuntimeException, RuntimeError)

# io.dtype -> (numpy storage type, ONNX element type)
_DTYPES: dict[str, tuple[type[np.generic], int]] = {
    "float32": (np.float32, 1),
    "float16": (np.float16, 10),
    "bfloat16": (np.uint16, 16),  # numpy has no bfloat16: same bytes, ORT is told the real type
    "int64": (np.int64, 7),
}


@dataclass(frozen=True)
class _StateSpec:
    name: str  # past.{i}.X
    output: str  # present.{i}.X
    dims: tuple[int, ...]  # per row, batch dimension removed
    dtype: str


@dataclass(frozen=True)
class StageSpec:
    file: str
    layers: tuple[int, int]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    state: tuple[_StateSpec, ...]
    hidden_dims: tuple[int, int] | None  # (hc_mult, hidden) of hidden_streams_in, for stage k > 0


def read_io(io: Mapping[str, Any], *, max_context: int) -> tuple[str, list[StageSpec]]:
    """The stages of a bundle's ``io`` object (docs/bundle.md), state shapes resolved per row."""
    try:
        dtype = str(io["dtype"])
        stages: list[StageSpec] = []
        for stage in io["stages"]:
            first, last = (int(x) for x in stage["layers"])
            state = tuple(
                _StateSpec(
                    name=str(e["input"]),
                    output=str(e["output"]),
                    dims=tuple(_resolve(d, max_context) for d in e["shape"][1:]),
                    dtype=str(e.get("dtype", dtype)),
                )
                for e in io["state"]
                if first <= int(e["layer"]) < last
            )
            hidden = next((i for i in stage["inputs"] if i["name"] == "hidden_streams_in"), None)
            hidden_dims = None
            if hidden is not None:
                hc, width = hidden["shape"][2:]
                hidden_dims = (int(hc), int(width))
            stages.append(
                StageSpec(
                    file=str(stage["file"]),
                    layers=(first, last),
                    inputs=tuple(str(i["name"]) for i in stage["inputs"]),
                    outputs=tuple(str(o["name"]) for o in stage["outputs"]),
                    state=state,
                    hidden_dims=hidden_dims,
                )
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"bundle.json: malformed 'io' object ({type(exc).__name__}: {exc})") from None
    if dtype not in _DTYPES or not stages:
        raise ModelError(f"bundle.json: unsupported io dtype {dtype!r} or no stages")
    return dtype, stages


def _resolve(dim: Any, max_context: int) -> int:
    if isinstance(dim, int):
        return dim
    if isinstance(dim, Mapping) and "capacity" in dim:
        return max_context // int(dim["capacity"]) + 1
    raise ModelError(f"bundle.json: cannot resolve state dimension {dim!r}")


class _Buffer:
    """A preallocated tensor on one device, addressable by row without copying."""

    def __init__(self, shape: tuple[int, ...], dtype: str, device: tuple[str, int]) -> None:
        np_type, self.onnx_type = _DTYPES[dtype]
        self.shape = shape
        self.device = device
        zeros = np.zeros(shape, dtype=np_type)
        if device[0] == "cpu":
            self.host: npt.NDArray[Any] | None = zeros  # the OrtValue wraps this memory
            self.value = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(zeros, self.onnx_type)
        else:
            self.host = None
            self.value = ort.OrtValue.ortvalue_from_shape_and_type(
                shape, self.onnx_type, device[0], device[1]
            )
            self.value.update_inplace(zeros)
        self.row_bytes = zeros[0].nbytes if shape else zeros.nbytes

    def ptr(self, row: int = 0) -> int:
        return int(self.value.data_ptr()) + row * self.row_bytes


class _Stage:
    def __init__(
        self,
        spec: StageSpec,
        session: ort.InferenceSession,
        device: tuple[str, int],
        *,
        num_slots: int,
        in_place: bool,
    ) -> None:
        self.spec = spec
        self.session = session
        self.device = device
        self.in_place = in_place

        def rows(n: int) -> dict[str, _Buffer]:
            return {s.name: _Buffer((n, *s.dims), s.dtype, device) for s in spec.state}

        # In place, decode writes the state it reads: one set. Otherwise a second set to ping-pong.
        self.sets = [rows(num_slots)] if in_place else [rows(num_slots), rows(num_slots)]
        self.zeros = rows(1)  # never written: the state of an empty sequence
        self.scratch = rows(1)  # every other chunk of a chunked prefill lands here
        self.parity = 0
        self.bindings: dict[tuple[int, int], ort.IOBinding] = {}

    @property
    def current(self) -> dict[str, _Buffer]:
        return self.sets[self.parity]

    @property
    def decode_target(self) -> dict[str, _Buffer]:
        return self.sets[0] if self.in_place else self.sets[1 - self.parity]

    def after_decode(self) -> None:
        if not self.in_place:
            self.parity = 1 - self.parity

    def bind(
        self, binding: ort.IOBinding, name: str, buf: _Buffer, row: int, rows: int, *, out: bool
    ) -> None:
        shape = (rows, *buf.shape[1:])
        kind, dev = buf.device
        if out:
            binding.bind_output(name, kind, dev, buf.onnx_type, shape, buf.ptr(row))
        else:
            binding.bind_input(name, kind, dev, buf.onnx_type, shape, buf.ptr(row))


class OrtRunner:
    """Runs a bundle's stage graphs for the engine (see :class:`appliance.engine.engine.Runner`)."""

    def __init__(
        self,
        bundle_dir: Path,
        io: Mapping[str, Any],
        *,
        num_slots: int,
        max_context: int,
        provider: Literal["cpu", "cuda"] = "cpu",
        device_ids: Seq[int] = (0,),
        intra_op_threads: int = 0,
        prefill_chunk: int = 1024,
        decode_in_place: bool | None = None,
    ) -> None:
        if num_slots < 1 or max_context < 2 or prefill_chunk < 1:
            raise ConfigError("the runner needs at least one slot and a context of at least 2 tokens")
        self._num_slots = num_slots
        self._max_context = max_context
        # Long prompts go in pieces: bounded activation memory (LLMEngine.from_bundle sizes them from
        # the bundle's dimensions, appliance/engine/memory.py).
        self._prefill_chunk = prefill_chunk
        self._act_dtype, specs = read_io(io, max_context=max_context)
        if provider == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError("execution_provider is 'cuda' but this ONNX Runtime has no CUDA provider")
            # onnxruntime-gpu finds CUDA/cuDNN from the nvidia-* wheels (or torch's) only if asked to
            # load them before the first CUDA session; a system-wide CUDA install needs nothing.
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()
        devices = _stage_devices(provider, device_ids, len(specs))
        # docs/bundle.md: a one-token decode may write its state over the state it reads; verified
        # bit-exact on the CPU provider, not yet on CUDA, where the default stays the ping-pong.
        in_place = provider == "cpu" if decode_in_place is None else decode_in_place
        self._stages: list[_Stage] = []
        for k, (spec, device) in enumerate(zip(specs, devices, strict=True)):
            session = _open_session(bundle_dir / spec.file, device, intra_op_threads)
            _check_names(bundle_dir / spec.file, session, spec, last=k == len(specs) - 1)
            self._stages.append(_Stage(spec, session, device, num_slots=num_slots, in_place=in_place))
        logits_meta = next((o for o in self._stages[-1].session.get_outputs() if o.name == "logits"), None)
        if logits_meta is None or not isinstance(logits_meta.shape[-1], int):
            raise ModelError(f"{bundle_dir}: the last stage has no logits output of static vocab size")
        self.vocab_size = int(logits_meta.shape[-1])
        # Host-side step inputs and the logits land here; fixed addresses, bound once.
        self._ids = [_Buffer((num_slots, 1), "int64", st.device) for st in self._stages]
        self._pos = [_Buffer((num_slots,), "int64", st.device) for st in self._stages]
        self._host_ids = np.zeros((num_slots, 1), dtype=np.int64)
        self._host_pos = np.zeros((num_slots,), dtype=np.int64)
        self._logits = _Buffer((num_slots, self.vocab_size), "float32", ("cpu", 0))
        self._copiers: dict[tuple[tuple[str, int], int], _RowCopier] = {}
        self._hidden = [
            _Buffer((num_slots, 1, *st.spec.hidden_dims), self._act_dtype, st.device)
            if st.spec.hidden_dims is not None
            else None
            for st in self._stages
        ]

    @property
    def num_slots(self) -> int:
        return self._num_slots

    @property
    def max_context(self) -> int:
        return self._max_context

    @property
    def num_stages(self) -> int:
        return len(self._stages)

    @property
    def prefill_chunk(self) -> int:
        return self._prefill_chunk

    def fork(self, source_slot: int, target_slot: int) -> None:
        """Give ``target_slot`` a copy of ``source_slot``'s cache state in every stage."""
        try:
            for stage in self._stages:
                for buf in stage.current.values():
                    copier = self._copiers.get((stage.device, buf.onnx_type))
                    if copier is None:
                        copier = _RowCopier(stage.device, buf.onnx_type)
                        self._copiers[(stage.device, buf.onnx_type)] = copier
                    copier.copy(buf, source_slot, target_slot)
        except _ORT_ERRORS as exc:
            raise EngineError(f"ONNX Runtime failed copying a cache slot: {exc}") from None

    def run(self, kind: Literal["prefill", "decode"], seqs: Seq[Sequence]) -> npt.NDArray[np.float32]:
        try:
            if kind == "decode":
                return self._decode(seqs)
            return np.stack([self._prefill(seq) for seq in seqs])
        except _ORT_ERRORS as exc:
            raise EngineError(f"ONNX Runtime failed during {kind}: {exc}") from None

    # Decode ------------------------------------------------------------------------------------

    def _decode(self, seqs: Seq[Sequence]) -> npt.NDArray[np.float32]:
        slots = [_slot(s) for s in seqs]
        n = max(slots) + 1
        self._host_ids[:n] = 0
        self._host_pos[:n] = 0
        for seq, slot in zip(seqs, slots, strict=True):
            (self._host_ids[slot, 0],) = seq.pending_ids
            self._host_pos[slot] = seq.num_cached
        for k, stage in enumerate(self._stages):
            self._upload(k)
            if k > 0:
                self._carry_hidden(k, n)
            binding = stage.bindings.get((n, stage.parity))
            if binding is None:
                binding = self._decode_binding(k, n)
                stage.bindings[(n, stage.parity)] = binding
            stage.session.run_with_iobinding(binding)
            stage.after_decode()
        logits = self._logits.host
        assert logits is not None
        return logits[slots].copy()

    def _decode_binding(self, k: int, n: int) -> ort.IOBinding:
        stage = self._stages[k]
        binding = stage.session.io_binding()
        stage.bind(binding, "input_ids", self._ids[k], 0, n, out=False)
        stage.bind(binding, "positions", self._pos[k], 0, n, out=False)
        hidden_in = self._hidden[k]
        if hidden_in is not None:
            stage.bind(binding, "hidden_streams_in", hidden_in, 0, n, out=False)
        # The stage's hidden/logits output is bound first: get_outputs()[0] is then that output.
        if k + 1 < len(self._stages):
            nxt = self._hidden[k + 1]
            assert nxt is not None
            if nxt.device == stage.device:
                stage.bind(binding, "hidden_streams", nxt, 0, n, out=True)
            else:
                binding.bind_output("hidden_streams", stage.device[0], stage.device[1])
        else:
            stage.bind(binding, "logits", self._logits, 0, n, out=True)
        for spec in stage.spec.state:
            stage.bind(binding, spec.name, stage.current[spec.name], 0, n, out=False)
            stage.bind(binding, spec.output, stage.decode_target[spec.name], 0, n, out=True)
        return binding

    def _upload(self, k: int) -> None:
        if self._ids[k].host is not None:
            assert self._ids[k].host is not None and self._pos[k].host is not None
            np.copyto(self._ids[k].host, self._host_ids)  # type: ignore[arg-type]
            np.copyto(self._pos[k].host, self._host_pos)  # type: ignore[arg-type]
        else:
            self._ids[k].value.update_inplace(self._host_ids)
            self._pos[k].value.update_inplace(self._host_pos)

    def _carry_hidden(self, k: int, n: int) -> None:
        """Stages on different devices: move the decode hidden state through the host (a few KB)."""
        prev = self._stages[k - 1]
        target = self._hidden[k]
        assert target is not None
        if target.device == prev.device:
            return
        binding = prev.bindings[(n, prev.parity if prev.in_place else 1 - prev.parity)]
        produced = binding.get_outputs()[0].numpy()
        full = np.zeros(target.shape, dtype=produced.dtype)
        full[:n] = produced
        target.value.update_inplace(full)

    # Prefill -----------------------------------------------------------------------------------

    def _prefill(self, seq: Sequence) -> npt.NDArray[np.float32]:
        """Feed the whole sequence in chunks of at most ``prefill_chunk`` tokens; logits after the last.

        Chunk ``i`` reads the state chunk ``i - 1`` wrote (zeros for the first) and writes either the
        slot's row or a one-row scratch set, alternating backwards from the last chunk, which writes
        the slot's row: the state ends where decode expects it without a copy, and no call aliases.
        """
        slot = _slot(seq)
        if seq.num_cached != 0:
            raise EngineError("prefill continues a cached sequence; this runner prefills from scratch")
        ids = seq.pending_ids
        chunks = [ids[i : i + self._prefill_chunk] for i in range(0, len(ids), self._prefill_chunk)]
        logits = np.empty((1, self.vocab_size), dtype=np.float32)
        for i, chunk in enumerate(chunks):
            writes_current = (len(chunks) - 1 - i) % 2 == 0
            self._run_chunk(
                chunk,
                i * self._prefill_chunk,
                slot,
                first=i == 0,
                writes_current=writes_current,
                logits=logits,
            )
        return logits[0]

    def _run_chunk(
        self,
        chunk: list[int],
        position: int,
        slot: int,
        *,
        first: bool,
        writes_current: bool,
        logits: npt.NDArray[np.float32],
    ) -> None:
        ids = np.asarray(chunk, dtype=np.int64)[None, :]
        positions = np.full((1,), position, dtype=np.int64)
        hidden: ort.OrtValue | None = None
        hidden_device: tuple[str, int] | None = None
        for k, stage in enumerate(self._stages):
            kind, dev = stage.device
            binding = stage.session.io_binding()
            binding.bind_ortvalue_input("input_ids", ort.OrtValue.ortvalue_from_numpy(ids, kind, dev))
            binding.bind_ortvalue_input("positions", ort.OrtValue.ortvalue_from_numpy(positions, kind, dev))
            if hidden is not None:
                if hidden_device != stage.device:
                    hidden = ort.OrtValue.ortvalue_from_numpy(hidden.numpy(), kind, dev)
                binding.bind_ortvalue_input("hidden_streams_in", hidden)
            last = k + 1 == len(self._stages)
            # The hidden/logits output is bound first: get_outputs()[0] is then that output.
            if last:
                binding.bind_output("logits", "cpu", 0, np.float32, logits.shape, logits.ctypes.data)
            else:
                binding.bind_output("hidden_streams", kind, dev)
            slot_row, scratch_row = (stage.current, slot), (stage.scratch, 0)
            (target, target_row), (source, source_row) = (
                (slot_row, scratch_row) if writes_current else (scratch_row, slot_row)
            )
            if first:
                source, source_row = stage.zeros, 0
            for spec in stage.spec.state:
                stage.bind(binding, spec.name, source[spec.name], source_row, 1, out=False)
                stage.bind(binding, spec.output, target[spec.name], target_row, 1, out=True)
            stage.session.run_with_iobinding(binding)
            if not last:
                hidden, hidden_device = binding.get_outputs()[0], stage.device


class _RowCopier:
    """Copies one row of a state buffer into another row of it, on the buffer's device."""

    def __init__(self, device: tuple[str, int], onnx_type: int) -> None:
        x = onnx.helper.make_tensor_value_info("x", onnx_type, ["n"])
        y = onnx.helper.make_tensor_value_info("y", onnx_type, ["n"])
        graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "copy", [x], [y])
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        model.ir_version = 8  # what every supported ONNX Runtime reads
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        providers: list[Any] = ["CPUExecutionProvider"]
        if device[0] == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device[1]}))
        self._session = ort.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=providers
        )
        self._device = device
        self._type = onnx_type

    def copy(self, buf: _Buffer, source: int, target: int) -> None:
        count = int(np.prod(buf.shape[1:], dtype=np.int64))
        kind, dev = self._device
        binding = self._session.io_binding()
        binding.bind_input("x", kind, dev, self._type, (count,), buf.ptr(source))
        binding.bind_output("y", kind, dev, self._type, (count,), buf.ptr(target))
        self._session.run_with_iobinding(binding)


def _slot(seq: Sequence) -> int:
    if seq.slot is None:
        raise EngineError(f"request {seq.request_id} has no cache slot")
    return seq.slot


def _check_names(path: Path, session: ort.InferenceSession, spec: StageSpec, *, last: bool) -> None:
    """The graph's inputs and outputs are the ones bundle.json's io describes (docs/bundle.md)."""
    want_in = {"input_ids", "positions", *(s.name for s in spec.state)}
    if spec.hidden_dims is not None:
        want_in.add("hidden_streams_in")
    want_out = {"logits" if last else "hidden_streams", *(s.output for s in spec.state)}
    have_in = {i.name for i in session.get_inputs()}
    have_out = {o.name for o in session.get_outputs()}
    missing = sorted((want_in - have_in) | (want_out - have_out))
    extra = sorted(have_in - want_in)
    if missing or extra:
        detail = f"missing {', '.join(missing)}" if missing else f"unexpected inputs {', '.join(extra)}"
        raise ModelError(f"{path.name}: graph does not match bundle.json io ({detail})")


def _stage_devices(provider: str, device_ids: Seq[int], stages: int) -> list[tuple[str, int]]:
    if provider == "cpu":
        return [("cpu", 0)] * stages
    if provider != "cuda":
        raise ConfigError(f"execution provider must be 'cpu' or 'cuda', got {provider!r}")
    ids = list(device_ids) or [0]
    if len(ids) < stages:
        # Fewer ids than stages: consecutive GPUs starting from the first one given.
        ids = [ids[0] + k for k in range(stages)]
    return [("cuda", ids[k]) for k in range(stages)]


#: ONNX Runtime's CPU QMoE kernel (1.22+) runs 8-bit experts on MLAS's int8-activation GEMM by
#: default — MLAS has no fp32 kernel for 8-bit weights — rounding each expert's input to 8 bits per
#: block: 1.2e-2 relative error on an expert's output where the weights alone give 8e-3, and the
#: int8 demo bundle kept fp32's top-1 on 98.3% of held-out tokens instead of 99.3%. "fp32" keeps
#: QMoE on dequantize + SGEMM for 8 bits (exact to the weights; slower on a large model); 4-bit
#: experts already take fp32 activations at accuracy_level 0, so they are unaffected. The variable
#: is read when a session creates its kernels; an operator's own value wins.
QMOE_ACTIVATIONS_ENV = "ORT_QMOE_CPU_QNBIT_GEMM"


def exact_qmoe_activations() -> None:
    """Make ONNX Runtime's CPU QMoE keep fp32 activations for 8-bit experts (see above)."""
    os.environ.setdefault(QMOE_ACTIVATIONS_ENV, "fp32")


def _open_session(path: Path, device: tuple[str, int], threads: int) -> ort.InferenceSession:
    if not path.is_file():
        raise ModelError(f"{path}: graph file missing")
    exact_qmoe_activations()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # Spinning worker threads burn the cores that other stages, the sampler and the API need, and on
    # a busy host they turn every one of the graph's ~1,000 small nodes into a scheduling wait.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list[Any] = ["CPUExecutionProvider"]
    if device[0] == "cuda":
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device[1]}))
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind exception types for unreadable graphs
        raise ModelError(f"{path}: ONNX Runtime cannot load the graph: {exc}") from None
