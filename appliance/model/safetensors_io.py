"""Streaming safetensors: read one tensor at a time through a memory map; write without buffering.

The format is an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
data_offsets relative to the data section; optional ``__metadata__``), then the raw bytes. We parse
the header ourselves so that every problem — a truncated file, offsets that overlap or run past
the end, a shape that does not match its byte count, an unknown dtype — becomes a
:class:`~shared.errors.ModelError` naming the file and tensor, before any weight is read.

Reading maps only the byte range of the tensor asked for and unmaps it once the float32 copy is
made, so the resident set of a build stays near the largest single tensor however many shards a
checkpoint has (a real V4-Flash checkpoint is ~150 GB).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import ModelError

__all__ = [
    "DTYPES",
    "FP8_E4M3_BYTES",
    "SafetensorsFile",
    "ShardedSafetensors",
    "TensorInfo",
    "TensorSpec",
    "bf16_to_f32",
    "byte_table",
    "decode_bytes",
    "f32_to_bf16",
    "fp8_e4m3_to_f32",
    "save_file",
    "ue8m0_to_f32",
    "write_file",
]

# safetensors dtype code -> numpy storage dtype. Formats numpy lacks (bf16, fp8) are read as raw
# unsigned integers of the same width and decoded by the helpers below.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"),
    "U32": np.dtype("<u4"),
    "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
    "F8_E8M0": np.dtype("u1"),
    # Two e2m1 values per byte; the header's shape counts values, so the last dimension is packed.
    "F4": np.dtype("u1"),
}
_PACKED_PAIRS = {"F4"}

_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit; a larger "length" means a corrupt file


def _nbytes(dtype: str, shape: Sequence[int]) -> int:
    count = int(np.prod(shape, dtype=np.int64))
    return count // 2 if dtype in _PACKED_PAIRS else count * DTYPES[dtype].itemsize


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors code, e.g. "F8_E4M3"
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int
    path: Path

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def _fp8_e4m3_table() -> np.ndarray:
    # e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, 0x7f/0xff are NaN.
    table = np.zeros(256, dtype=np.float32)
    for byte in range(256):
        sign = -1.0 if byte & 0x80 else 1.0
        exp = (byte >> 3) & 0xF
        man = byte & 0x7
        if exp == 0xF and man == 0x7:
            table[byte] = np.nan
        elif exp == 0:
            table[byte] = sign * (man / 8.0) * 2.0**-6
        else:
            table[byte] = sign * (1.0 + man / 8.0) * 2.0 ** (exp - 7)
    return table


def byte_table(per_byte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A decoder for :func:`decode_bytes` from ``per_byte`` [256, n] (the n values byte b stands for).

    Two tables of opaque wide elements: one per byte, and one per byte pair read as a little-endian
    uint16 (both bytes' values side by side). A gather costs numpy about the same whatever the
    element's width, so decoding two bytes per gather halves the work (FP8: 109 ms against 210 ms
    for 33.5M bytes here); the pair table is 65,536 elements (512 KiB for FP8), within L2.
    """
    per_byte = np.ascontiguousarray(per_byte)
    pairs = np.arange(1 << 16)
    wide = np.ascontiguousarray(np.concatenate([per_byte[pairs & 0xFF], per_byte[pairs >> 8]], axis=1))
    one = np.dtype((np.void, per_byte.shape[1] * per_byte.itemsize))
    two = np.dtype((np.void, 2 * one.itemsize))
    return per_byte.view(one).reshape(256), wide.view(two).reshape(1 << 16)


def decode_bytes(
    raw: np.ndarray, table: tuple[np.ndarray, np.ndarray], dtype: np.dtype, out: np.ndarray | None = None
) -> np.ndarray:
    """Bytes ``raw`` [..., L] -> ``dtype`` values [..., L * n] through a :func:`byte_table` (into ``out``
    when given: a C-contiguous array of that shape)."""
    u8 = raw.view(np.uint8)
    one, two = table
    n = one.dtype.itemsize // np.dtype(dtype).itemsize
    shape = (*u8.shape[:-1], u8.shape[-1] * n)
    if out is None:
        out = np.empty(shape, dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ModelError(f"decode_bytes: out must be a contiguous {np.dtype(dtype)} array of shape {shape}")
    # mode="clip": every index is in the table, and numpy buffers ``out`` in the default "raise" mode.
    if u8.shape[-1] % 2 == 0 and u8.flags.c_contiguous:
        pairs = u8.view("<u2")  # byte 2i is the low byte on any host: the table was built that way
        np.take(two, pairs, out=out.view(two.dtype).reshape(pairs.shape), mode="clip")
    else:
        np.take(one, u8, out=out.view(one.dtype).reshape(u8.shape), mode="clip")
    return out


_FP8_E4M3 = _fp8_e4m3_table()
FP8_E4M3_BYTES = byte_table(_FP8_E4M3[:, None])


def fp8_e4m3_to_f32(raw: np.ndarray) -> np.ndarray:
    """Decode float8 e4m3fn bytes (as uint8) to float32."""
    return decode_bytes(raw, FP8_E4M3_BYTES, np.dtype(np.float32))


def ue8m0_to_f32(raw: np.ndarray) -> np.ndarray:
    """Decode UE8M0 scale bytes (an unsigned power-of-two exponent, bias 127) to float32."""
    exp = raw.view(np.uint8).astype(np.int32) - 127
    out = np.ldexp(np.float32(1.0), exp).astype(np.float32)
    out[raw.view(np.uint8) == 0xFF] = np.nan
    return out


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bits (uint16)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


class SafetensorsFile:
    """One ``.safetensors`` file, header parsed and validated on open; tensors read on demand."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.metadata: dict[str, str] = {}
        self._infos: dict[str, TensorInfo] = {}
        self._parse()

    def _fail(self, why: str) -> ModelError:
        return ModelError(f"{self.path.name}: {why}")

    def _parse(self) -> None:
        try:
            size = self.path.stat().st_size
            with self.path.open("rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    raise self._fail("truncated safetensors file (no header)")
                (length,) = struct.unpack("<Q", head)
                if length > _MAX_HEADER or 8 + length > size:
                    raise self._fail(f"truncated or corrupt safetensors header ({length} bytes declared)")
                raw = fh.read(length)
        except OSError as exc:
            raise self._fail(f"cannot read: {exc.strerror or exc}") from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise self._fail("corrupt safetensors header (not JSON)") from None
        if not isinstance(header, dict):
            raise self._fail("corrupt safetensors header (not an object)")
        base = 8 + length
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict):
            raise self._fail("corrupt safetensors header (__metadata__ is not an object)")
        self.metadata = {str(k): str(v) for k, v in meta.items()}
        for name, entry in header.items():
            self._infos[name] = self._validate_entry(name, entry, base, size)

    def _validate_entry(self, name: str, entry: object, base: int, size: int) -> TensorInfo:
        if not isinstance(entry, dict):
            raise self._fail(f"tensor {name}: corrupt header entry")
        dtype = entry.get("dtype")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if dtype not in DTYPES:
            raise self._fail(f"tensor {name}: unsupported dtype {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise self._fail(f"tensor {name}: bad shape {shape!r}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise self._fail(f"tensor {name}: bad data_offsets {offsets!r}")
        if dtype in _PACKED_PAIRS and (not shape or shape[-1] % 2):
            raise self._fail(f"tensor {name}: {dtype} needs an even last dimension, got shape {shape}")
        expected = _nbytes(dtype, shape)
        if offsets[1] - offsets[0] != expected:
            raise self._fail(
                f"tensor {name}: shape {shape} {dtype} needs {expected} bytes, header gives {offsets[1] - offsets[0]}"
            )
        if base + offsets[1] > size:
            raise self._fail(
                f"truncated safetensors file: tensor {name} ends at byte {base + offsets[1]}, file has {size}"
            )
        return TensorInfo(name, dtype, tuple(shape), base + offsets[0], base + offsets[1], self.path)

    def names(self) -> list[str]:
        return list(self._infos)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise ModelError(f"{self.path.name}: no tensor {name}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def read(self, name: str, convert: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """The stored array (numpy storage dtype, see :data:`DTYPES`), copied out of a transient map.

        ``convert`` runs on the mapped view before the map closes, so a dtype conversion costs one
        output array and no intermediate copy.
        """
        info = self.info(name)
        dtype = DTYPES[info.dtype]
        shape = info.shape
        if info.dtype in _PACKED_PAIRS:
            shape = (*shape[:-1], shape[-1] // 2)
        if info.nbytes == 0:
            empty = np.zeros(shape, dtype=dtype)
            return convert(empty) if convert else empty
        # mmap offsets must be page-aligned; map from the page holding the first byte.
        start = info.start - info.start % mmap.ALLOCATIONGRANULARITY
        lead = info.start - start
        try:
            with self.path.open("rb") as fh:
                mapped = mmap.mmap(fh.fileno(), lead + info.nbytes, access=mmap.ACCESS_READ, offset=start)
        except (OSError, ValueError) as exc:
            raise self._fail(f"tensor {name}: cannot map: {exc}") from None
        try:
            view = np.frombuffer(mapped, dtype=dtype, count=info.nbytes // dtype.itemsize, offset=lead)
            view = view.reshape(shape)
            out = convert(view) if convert else view.copy()
            if np.shares_memory(out, view):
                out = out.copy()
            del view
        finally:
            # A failed conversion's traceback still references the view; the map is then released
            # when that traceback is.
            with contextlib.suppress(BufferError):
                mapped.close()
        return out

    def read_whole(self, name: str) -> np.ndarray:
        """The stored array read straight into a new array (no map): for a tensor used as stored,
        whose mapped pages would otherwise count in the process's resident memory beside the copy
        (a 2.1 GB float32 LM head peaked at twice that)."""
        info = self.info(name)
        dtype = DTYPES[info.dtype]
        shape = info.shape
        if info.dtype in _PACKED_PAIRS:
            shape = (*shape[:-1], shape[-1] // 2)
        out = np.empty(shape, dtype=dtype)
        raw = out.reshape(-1).view(np.uint8).data
        done = 0
        try:
            with self.path.open("rb", buffering=0) as fh:
                fh.seek(info.start)
                while done < info.nbytes:  # one read(2) returns at most ~2 GiB
                    got = fh.readinto(raw[done:])
                    if not got:
                        break
                    done += got
        except OSError as exc:
            raise self._fail(f"tensor {name}: cannot read: {exc}") from None
        if done != info.nbytes:
            raise self._fail(f"tensor {name}: {done} of {info.nbytes} bytes read")
        return out


class ShardedSafetensors:
    """All shards of a checkpoint directory, by tensor name.

    Uses ``*.safetensors.index.json`` when there is one (every shard it names must exist and hold
    what it says); otherwise every ``*.safetensors`` file in the directory.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._files: dict[str, SafetensorsFile] = {}
        self._where: dict[str, SafetensorsFile] = {}
        indexes = sorted(self.directory.glob("*.safetensors.index.json"))
        if len(indexes) > 1:
            raise ModelError(
                f"{self.directory}: more than one safetensors index: {[p.name for p in indexes]}"
            )
        if indexes:
            self._load_index(indexes[0])
        else:
            shards = sorted(self.directory.glob("*.safetensors"))
            if not shards:
                raise ModelError(f"{self.directory}: no *.safetensors files")
            for shard in shards:
                self._add(self._open(shard.name))

    def _open(self, filename: str) -> SafetensorsFile:
        if filename not in self._files:
            path = self.directory / filename
            if Path(filename).name != filename or not path.is_file():
                raise ModelError(f"{self.directory}: missing shard {filename}")
            self._files[filename] = SafetensorsFile(path)
        return self._files[filename]

    def _add(self, shard: SafetensorsFile) -> None:
        for name in shard.names():
            if name in self._where:
                raise ModelError(
                    f"tensor {name} is in both {self._where[name].path.name} and {shard.path.name}"
                )
            self._where[name] = shard

    def _load_index(self, index: Path) -> None:
        try:
            document = json.loads(index.read_text(encoding="utf-8"))
            weight_map = document["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            raise ModelError(
                f"{index.name}: unreadable safetensors index (needs a weight_map object)"
            ) from None
        for name, filename in weight_map.items():
            shard = self._open(str(filename))
            if name not in shard:
                raise ModelError(f"{index.name}: tensor {name} is not in {filename}")
            self._where[name] = shard

    def names(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def info(self, name: str) -> TensorInfo:
        shard = self._where.get(name)
        if shard is None:
            raise ModelError(f"missing tensor {name}")
        return shard.info(name)

    def read(self, name: str, convert: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        self.info(name)
        return self._where[name].read(name, convert)

    def read_whole(self, name: str) -> np.ndarray:
        self.info(name)
        return self._where[name].read_whole(name)

    @property
    def total_bytes(self) -> int:
        return sum(self.info(n).nbytes for n in self._where)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]


def write_file(
    path: Path | str,
    specs: Sequence[TensorSpec],
    produce: Callable[[TensorSpec], np.ndarray],
    *,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a safetensors file whose tensors are produced one at a time, in ``specs`` order.

    The header is computed from the specs, so nothing but the tensor in hand is ever held.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for spec in specs:
        if spec.dtype not in DTYPES:
            raise ModelError(f"tensor {spec.name}: unsupported dtype {spec.dtype!r}")
        nbytes = _nbytes(spec.dtype, spec.shape)
        header[spec.name] = {
            "dtype": spec.dtype,
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # keep the data section 8-byte aligned, as the reference writer does
    with Path(path).open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for spec in specs:
            array = np.ascontiguousarray(produce(spec))
            storage = DTYPES[spec.dtype]
            stored = (*spec.shape[:-1], spec.shape[-1] // 2) if spec.dtype in _PACKED_PAIRS else spec.shape
            if array.shape != stored or array.dtype.itemsize != storage.itemsize:
                raise ModelError(
                    f"tensor {spec.name}: produced {array.dtype}{array.shape}, spec says {spec.dtype}{spec.shape}"
                )
            fh.write(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
        fh.flush()
        os.fsync(fh.fileno())


_NUMPY_CODES = {
    np.dtype(v): k for k, v in DTYPES.items() if k not in ("BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0")
}


def save_file(
    path: Path | str,
    tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray, str]],
    *,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write tensors held in memory. Pairs take their code from the numpy dtype; triples name it
    (for storage-only formats: ``("w", uint8_array, "F8_E4M3")``; for "F4" pass the packed bytes)."""
    items: list[tuple[str, np.ndarray, str]] = []
    source: Iterator[tuple[str, np.ndarray]] | Iterable[tuple[str, np.ndarray, str]]
    if isinstance(tensors, Mapping):
        source = iter(tensors.items())
        for name, array in source:
            code = _NUMPY_CODES.get(np.asarray(array).dtype)
            if code is None:
                raise ModelError(f"tensor {name}: no safetensors dtype for {np.asarray(array).dtype}")
            items.append((name, np.asarray(array), code))
    else:
        items = [(n, np.asarray(a), c) for n, a, c in tensors]
    by_name = {name: array for name, array, _ in items}
    specs = [
        TensorSpec(
            name,
            code,
            (*array.shape[:-1], 2 * array.shape[-1]) if code in _PACKED_PAIRS else tuple(array.shape),
        )
        for name, array, code in items
    ]
    write_file(path, specs, lambda spec: by_name[spec.name], metadata=metadata)
