"""Build, verify and open Enclave model bundles.

A bundle is a directory (docs/bundle.md has the graph I/O contract):

    bundle.json        format, name, version, architecture config, dtype, quant, moe, stages,
                       graph files, io (graph_io verbatim), tokenizer, special tokens, prompt format
    model.onnx         one graph per pipeline stage (stage0.onnx, stage1.onnx, ... for N > 1),
    model.onnx.data    each with its weights in one external data file beside it
    tokenizer.json
    manifest.json      sha256 + size of every other file (see manifest.py)
    manifest.sig       Ed25519 signature of manifest.json

``build_bundle`` writes everything into a hidden temporary directory next to ``out_dir`` and renames
it into place only once the manifest is signed: an interrupted or failed build leaves nothing at
``out_dir`` (and removes its temporary directory). ``load_bundle`` is the one way to open a bundle
for use: it verifies the signature against pinned keys and every file against the manifest first.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from onnx import TensorProto, helper, numpy_helper

from shared.errors import IntegrityError, ModelError

from .checkpoint import Checkpoint, open_checkpoint
from .config import V4Config
from .manifest import Manifest, verify_manifest, write_manifest
from .progress import NullProgress, Progress
from .release import Fp8, Mxfp4
from .signing import default_signing_key

__all__ = [
    "BUNDLE_FORMAT",
    "DTYPES",
    "MOE_PATHS",
    "QUANTS",
    "SPECIAL_TOKENS",
    "Bundle",
    "build_bundle",
    "load_bundle",
    "write_bundle_files",
]

BUNDLE_FORMAT = "enclave-model-bundle"
BUNDLE_FORMAT_VERSION = 1
DTYPES = ("fp32", "fp16", "bf16")
QUANTS = ("none", "int8", "int4")
MOE_PATHS = ("ort", "portable")  # as graph/moe.py: the first is the default
PROMPT_FORMAT = "deepseek_v4"
SPECIAL_TOKENS = {
    "bos": "<｜begin▁of▁sentence｜>",
    "eos": "<｜end▁of▁sentence｜>",
    "user": "<｜User｜>",
    "assistant": "<｜Assistant｜>",
    "think_begin": "<think>",
    "think_end": "</think>",
    "fim_begin": "<｜fim▁begin｜>",
    "fim_hole": "<｜fim▁hole｜>",
    "fim_end": "<｜fim▁end｜>",
    "pad": "<｜▁pad▁｜>",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_EXTERNAL_MIN_BYTES = 1024  # smaller constants stay inside the graph file
_ALIGN = 64


@dataclass(frozen=True)
class Bundle:
    """A verified bundle. Paths are absolute; ``info`` is bundle.json."""

    path: Path
    info: dict[str, Any]
    config: V4Config
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def io(self) -> dict[str, Any]:
        return dict(self.info["io"])

    @property
    def graph_paths(self) -> list[Path]:
        return [self.path / g for g in self.info["graphs"]]

    @property
    def tokenizer_path(self) -> Path:
        return self.path / str(self.info["tokenizer"])


def load_bundle(
    path: Path | str,
    *,
    trusted_keys: Sequence[Ed25519PublicKey],
    check_files: bool = True,
    sealed: Mapping[str, Sequence[int]] | None = None,
) -> Bundle:
    """Verify and open a bundle; IntegrityError if it does not verify, ModelError if it is unusable.

    ``sealed`` and ``check_files=False`` are verify_manifest's: the store passes the stamps of an
    installed copy it hashed before, and import checks only the signature of a source it is about
    to hash while copying.
    """
    root = Path(path).resolve()
    manifest = verify_manifest(root, trusted_keys, check_files=check_files, sealed=sealed)
    try:
        info = json.loads((root / "bundle.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{root.name}: unreadable bundle.json: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != BUNDLE_FORMAT:
        raise ModelError(f"{root.name}: bundle.json is not an Enclave model bundle")
    if info.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise ModelError(
            f"{root.name}: bundle format version {info.get('format_version')!r} is not supported"
        )
    if info.get("name") != manifest.name or info.get("version") != manifest.version:
        raise IntegrityError(f"{root.name}: bundle.json name/version disagree with the signed manifest")
    for key in ("config", "graphs", "io", "tokenizer"):
        if key not in info:
            raise ModelError(f"{root.name}: bundle.json has no {key!r}")
    for rel in [*info["graphs"], info["tokenizer"]]:
        if rel not in manifest.files:
            raise ModelError(f"{root.name}: bundle.json names {rel}, which is not in the manifest")
    return Bundle(root, info, V4Config.from_dict(info["config"]), manifest)


# ---- writing ------------------------------------------------------------------------------------


class ExternalData:
    """Appends tensors to one external data file and hands back TensorProtos that reference it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = path.open("wb")
        self.nbytes = 0
        # Hashed as written, so the manifest need not read the largest file of the bundle again.
        self._digest = hashlib.sha256()

    def add(self, name: str, array: np.ndarray) -> TensorProto:
        array = np.ascontiguousarray(array)
        offset = self._align()
        return self._reference(name, array.dtype, array.shape, offset, self._append(array))

    def _align(self) -> int:
        """Pad to the next aligned offset, which is returned."""
        pad = -self.nbytes % _ALIGN
        if pad:
            self._write(b"\0" * pad)
            self.nbytes += pad
        return self.nbytes

    def _append(self, array: np.ndarray) -> int:
        # Write straight from the array's buffer: no bytes copy of a possibly large tensor.
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
        self._write(raw)
        self.nbytes += len(raw)
        return len(raw)

    def _reference(
        self, name: str, dtype: np.dtype, shape: Sequence[int], offset: int, length: int
    ) -> TensorProto:
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(dtype)
        tensor.dims.extend(shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return tensor

    def _write(self, data: bytes | memoryview) -> None:
        self._fh.write(data)
        self._digest.update(data)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def __call__(self, name: str, array: np.ndarray) -> TensorProto:
        """The graph builder's WeightSink: large weights to the file, small constants inline."""
        if array.nbytes < _EXTERNAL_MIN_BYTES:
            return numpy_helper.from_array(np.ascontiguousarray(array), name)
        return self.add(name, array)

    def stream(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> _Stream | None:
        """A tensor of ``shape`` written part by part along its first axis (the builder's stacked
        experts); nothing else may be added to this file until it is finished. None for a small one."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if nbytes < _EXTERNAL_MIN_BYTES:
            return None
        return _Stream(self, name, np.dtype(dtype), shape, self._align(), nbytes)

    def reopen(self) -> None:
        """Append again after :meth:`close` (the writer closes between building and saving)."""
        self._fh = self.path.open("ab")

    def externalize(self, model: onnx.ModelProto) -> None:
        """Move every initializer still held in the proto (raw bytes) into this file."""
        for tensor in model.graph.initializer:
            if tensor.data_location == TensorProto.EXTERNAL or not tensor.HasField("raw_data"):
                continue
            if len(tensor.raw_data) < _EXTERNAL_MIN_BYTES:
                continue
            raw = tensor.raw_data
            pad = -self.nbytes % _ALIGN
            if pad:
                self._write(b"\0" * pad)
                self.nbytes += pad
            offset = self.nbytes
            self._write(raw)
            self.nbytes += len(raw)
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (
                ("location", self.path.name),
                ("offset", str(offset)),
                ("length", str(len(raw))),
            ):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value

    def close(self) -> None:
        self._fh.flush()
        self._fh.close()


class _Stream:
    """One ExternalData tensor being written in consecutive parts (see ExternalData.stream)."""

    def __init__(
        self, data: ExternalData, name: str, dtype: np.dtype, shape: tuple[int, ...], offset: int, nbytes: int
    ) -> None:
        self._data, self._name, self._dtype, self._shape = data, name, dtype, shape
        self._offset, self._expected = offset, nbytes

    def write(self, part: np.ndarray) -> None:
        """The next entry of the first axis, or the next run of entries."""
        rows = part if part.ndim == len(self._shape) else part[None]
        if part.dtype != self._dtype or tuple(rows.shape[1:]) != self._shape[1:]:
            raise ModelError(
                f"{self._name}: a part of dtype {part.dtype} and shape {part.shape} does not fit"
            )
        if self._data.nbytes + part.nbytes - self._offset > self._expected:
            raise ModelError(f"{self._name}: more parts than its shape {self._shape} holds")
        self._data._append(part)

    def finish(self) -> TensorProto:
        length = self._data.nbytes - self._offset
        if length != self._expected:
            raise ModelError(f"{self._name}: {length} of {self._expected} bytes written")
        return self._data._reference(self._name, self._dtype, self._shape, self._offset, length)


@contextmanager
def staged_directory(out_dir: Path) -> Iterator[Path]:
    """A temporary sibling of ``out_dir`` renamed to it on success and removed on any failure."""
    if out_dir.exists():
        raise ModelError(f"{out_dir} already exists; choose a new output directory")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as exc:
        raise ModelError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a bundle holds no secrets and services read it
        yield tmp
        tmp.rename(out_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        # A full disk or a vanished directory is the user's to fix: one line, not a traceback.
        raise ModelError(f"cannot write {out_dir}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _CountingCheckpoint:
    """Forwards reads to the checkpoint and reports tensors/bytes done to ``progress``."""

    def __init__(self, ckpt: Checkpoint, progress: Progress) -> None:
        self._ckpt = ckpt
        self._progress = progress
        self.config = ckpt.config
        self.tokenizer_path = ckpt.tokenizer_path

    def names(self) -> list[str]:
        return self._ckpt.names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self._ckpt.shape(name)

    def tensor(self, name: str) -> np.ndarray:
        out = self._ckpt.tensor(name)
        self._progress.advance(tensors=1, nbytes=self._ckpt.stored_bytes(name))
        return out

    def tensor_fp8(self, name: str) -> Fp8 | None:
        out = self._ckpt.tensor_fp8(name)
        if out is not None:  # otherwise the builder reads it with tensor(), which counts it
            self._progress.advance(tensors=1, nbytes=self._ckpt.stored_bytes(name))
        return out

    def expert(self, name: str, index: int) -> np.ndarray:
        out = self._ckpt.expert(name, index)
        self._advance_expert(name, index)
        return out

    def expert_mxfp4(self, name: str, index: int) -> Mxfp4 | None:
        out = self._ckpt.expert_mxfp4(name, index)
        if out is not None:  # otherwise the builder reads it with expert(), which counts it
            self._advance_expert(name, index)
        return out

    def _advance_expert(self, name: str, index: int) -> None:
        count = self._ckpt.shape(name)[0]
        share = self._ckpt.stored_bytes(name) // count
        self._progress.advance(tensors=1 if index == count - 1 else 0, nbytes=share)


def _validate_options(config: V4Config, dtype: str, quant: str, stages: int, moe: str) -> None:
    if dtype not in DTYPES:
        raise ModelError(f"unsupported dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    if quant not in QUANTS:
        raise ModelError(f"unsupported quant {quant!r} (choose from {', '.join(QUANTS)})")
    if moe not in MOE_PATHS:
        raise ModelError(f"unsupported moe path {moe!r} (choose from {', '.join(MOE_PATHS)})")
    if not 1 <= stages <= config.num_hidden_layers:
        raise ModelError(f"stages must be 1..{config.num_hidden_layers} (the number of layers), got {stages}")


def _special_token_ids(tokenizer_path: Path) -> dict[str, int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    ids: dict[str, int] = {}
    for role, text in SPECIAL_TOKENS.items():
        token_id = tok.token_to_id(text)
        if token_id is not None:
            ids[role] = int(token_id)
    return ids


def default_version(now: datetime | None = None) -> int:
    """A version that grows with build time (YYYYMMDDHHMMSS), for builds not given one."""
    return int((now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S"))


def write_bundle_files(
    root: Path,
    *,
    info: dict[str, Any],
    graphs: Sequence[tuple[str, onnx.ModelProto]],
    tokenizer_path: Path,
    signing_key: Ed25519PrivateKey,
    data: Sequence[ExternalData] | None = None,
) -> Manifest:
    """Write graphs (weights external), tokenizer, bundle.json, manifest and signature into ``root``.

    Weights still inside the graphs go to their graph's ``data`` file (one per graph, closed; the
    builder's), or by default to a new ``<graph file>.data``.
    """
    if data is not None and len(data) != len(graphs):
        raise ModelError(f"{len(data)} weight files for {len(graphs)} graphs")
    known: dict[str, str] = {}
    for k, (filename, model) in enumerate(graphs):
        if data is None:
            sink = ExternalData(root / f"{filename}.data")
        else:
            sink = data[k]
            sink.reopen()
        try:
            sink.externalize(model)
        finally:
            sink.close()
        if sink.nbytes == 0:
            sink.path.unlink()
        else:
            known[sink.path.name] = sink.sha256  # hashed as written: the manifest need not read it
        (root / filename).write_bytes(model.SerializeToString())
    shutil.copyfile(tokenizer_path, root / "tokenizer.json")
    (root / "bundle.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return write_manifest(
        root, signing_key, name=str(info["name"]), version=int(info["version"]), known=known
    )


def build_bundle(
    checkpoint_dir: Path | str,
    out_dir: Path | str,
    *,
    dtype: str = "fp32",
    quant: str = "none",
    stages: int = 1,
    moe: str = "ort",
    signing_key: Ed25519PrivateKey | None = None,
    name: str | None = None,
    version: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """Checkpoint directory -> signed bundle at ``out_dir`` (which must not exist). Returns ``out_dir``."""
    from .graph import build_graphs, graph_io  # the graph package pulls in onnx helpers only when building

    out = Path(out_dir)
    progress = progress or NullProgress()
    ckpt = open_checkpoint(checkpoint_dir)
    _validate_options(ckpt.config, dtype, quant, stages, moe)
    name = name or Path(checkpoint_dir).resolve().name
    if not _NAME_RE.match(name):
        raise ModelError(f"bundle name {name!r} must be letters, digits, '.', '_' or '-'")
    version = default_version() if version is None else version
    if version < 0:
        raise ModelError(f"bundle version must be a non-negative integer, got {version}")
    key = signing_key or default_signing_key()
    io = graph_io(ckpt.config, dtype=dtype, stages=stages)
    files = [str(stage["file"]) for stage in io["stages"]]
    info: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "name": name,
        "version": version,
        "config": ckpt.config.to_dict(),
        "dtype": dtype,
        "quant": quant,
        "quantization": _quantization_info(quant),
        "moe": moe,
        "stages": stages,
        "graphs": files,
        "io": io,
        "tokenizer": "tokenizer.json",
        "special_tokens": _special_token_ids(ckpt.tokenizer_path),
        "prompt_format": PROMPT_FORMAT,
        "source": {"layout": ckpt.layout, "checkpoint_bytes": ckpt.total_bytes},
    }
    with staged_directory(out) as root:
        progress.start(tensors=len(ckpt.names()), nbytes=ckpt.total_bytes)
        counting = _CountingCheckpoint(ckpt, progress)
        # Weights go to disk as the builder makes them, so the graphs in memory hold only references.
        # Each stage has its own data file (stageK.onnx.data): a GPU's session reads only its file,
        # and a stage can be placed, copied or cached on its own.
        data = [ExternalData(root / f"{file}.data") for file in files]
        try:
            models = build_graphs(
                counting, dtype=dtype, quant=quant, stages=stages, moe=moe, weight_sink=data
            )
        finally:
            for d in data:
                d.close()
            progress.finish()  # ends the bar's line on failure too, so an error prints on its own line
        if len(models) != len(files):
            raise ModelError(f"graph builder returned {len(models)} graphs for {len(files)} stages")
        progress.phase("writing graphs, manifest and signature")
        write_bundle_files(
            root,
            info=info,
            graphs=list(zip(files, models, strict=True)),
            tokenizer_path=ckpt.tokenizer_path,
            signing_key=key,
            data=data,
        )
    return out


def _quantization_info(quant: str) -> dict[str, Any]:
    if quant == "none":
        return {"method": "none"}
    from .graph.builder import QUANT_BITS, QUANT_BLOCK

    expert_bits, projection_bits = QUANT_BITS[quant]
    return {
        "method": "weight-only",
        "block_size": QUANT_BLOCK,
        "routed_experts": {"bits": expert_bits, "op": "QMoE"},
        "projections": {"bits": projection_bits, "op": "MatMulNBits"},
    }
