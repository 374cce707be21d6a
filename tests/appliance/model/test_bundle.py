"""Bundles: written signed, verified before use, tampering refused with the reason, imported without rollback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper, numpy_helper

from appliance.model.bundle import BUNDLE_FORMAT, load_bundle, staged_directory, write_bundle_files
from appliance.model.signing import pin_public_key, trusted_keys
from appliance.model.store import active_bundle_path, import_bundle, list_models, open_installed
from shared.errors import ConflictError, IntegrityError, ModelError, NotFoundError
from tests.helpers.v4_release import TINY_CONFIG

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _graph(scale: float) -> onnx.ModelProto:
    weight = np.full((32, 32), scale, np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def make_bundle(out: Path, tokenizer: Path, *, version: int = 1, key: Ed25519PrivateKey = KEY, scale: float = 1.0) -> Path:
    config = {**TINY_CONFIG, "model_type": "deepseek_v4"}
    info = {
        "format": BUNDLE_FORMAT, "format_version": 1, "name": "tiny", "version": version, "config": config,
        "dtype": "fp32", "quant": "none", "moe": "portable", "stages": 1, "graphs": ["model.onnx"],
        "io": {"dtype": "float32", "stages": [{"file": "model.onnx"}], "state": []}, "tokenizer": "tokenizer.json",
    }
    with staged_directory(out) as root:
        write_bundle_files(root, info=info, graphs=[("model.onnx", _graph(scale))], tokenizer_path=tokenizer,
                           signing_key=key)
    return out


@pytest.fixture
def tokenizer(tmp_path: Path) -> Path:
    from tokenizers import Tokenizer, models

    path = tmp_path / "tok.json"
    Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a")).save(str(path))
    return path


@pytest.fixture
def bundle(tmp_path: Path, tokenizer: Path) -> Path:
    return make_bundle(tmp_path / "b1", tokenizer)


def test_bundle_verifies_loads_and_runs(bundle: Path) -> None:
    loaded = load_bundle(bundle, trusted_keys=[KEY.public_key()])
    assert (loaded.name, loaded.version) == ("tiny", 1)
    assert sorted(loaded.manifest.files) == ["bundle.json", "model.onnx", "model.onnx.data", "tokenizer.json"]
    assert loaded.graph_paths == [bundle.resolve() / "model.onnx"]
    # The weights live in the external data file, and ONNX Runtime finds them there.
    assert (bundle / "model.onnx").stat().st_size < 1024 < (bundle / "model.onnx.data").stat().st_size
    session = ort.InferenceSession(str(loaded.graph_paths[0]), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": np.ones((1, 32), np.float32)})[0]
    np.testing.assert_allclose(y, np.full((1, 32), 32.0))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda b, o: _flip_byte(b / "model.onnx.data"), "file model.onnx.data does not match its manifest digest"),
        (lambda b, o: (b / "extra.bin").write_bytes(b"x"), "unexpected file extra.bin"),
        (lambda b, o: (b / "tokenizer.json").unlink(), "missing file tokenizer.json"),
        (lambda b, o: (b / "manifest.sig").unlink(), "bundle is unsigned"),
        (lambda b, o: (b / "manifest.json").write_text(
            (b / "manifest.json").read_text().replace('"version": 1', '"version": 9')), "signature does not verify"),
        (lambda b, o: [shutil.copy(o / f, b / f) for f in ("manifest.json", "manifest.sig")],
         "does not match its manifest digest"),
        (lambda b, o: (b / "manifest.sig").write_text("{}"), "manifest.sig is malformed"),
    ],
    ids=["changed-file", "extra-file", "missing-file", "unsigned", "edited-manifest", "swapped-manifest", "bad-sig"],
)
def test_tampered_bundle_is_refused_with_reason(bundle: Path, tmp_path: Path, tokenizer: Path, tamper, reason: str) -> None:  # type: ignore[no-untyped-def]
    other = make_bundle(tmp_path / "other", tokenizer, scale=2.0)
    tamper(bundle, other)
    with pytest.raises(IntegrityError, match=reason):
        load_bundle(bundle, trusted_keys=[KEY.public_key()])


def test_wrong_key_and_empty_trust_are_refused(bundle: Path) -> None:
    with pytest.raises(IntegrityError, match="not a trusted model-signing key"):
        load_bundle(bundle, trusted_keys=[OTHER_KEY.public_key()])
    with pytest.raises(IntegrityError, match="no trusted model-signing keys"):
        load_bundle(bundle, trusted_keys=[])


def test_import_installs_activates_and_refuses_rollback(tmp_path: Path, tokenizer: Path) -> None:
    data = tmp_path / "data"
    v1 = make_bundle(tmp_path / "v1", tokenizer, version=1)
    v2 = make_bundle(tmp_path / "v2", tokenizer, version=2, scale=2.0)
    with pytest.raises(IntegrityError, match="no trusted model-signing keys"):
        import_bundle(v1, data)
    assert not (data / "models").exists() or list_models(data) == []
    pin_public_key(data, KEY.public_key(), "builder")
    pin_public_key(data, KEY.public_key(), "again")  # pinning twice keeps one file
    assert len(trusted_keys(data)) == 1

    installed = import_bundle(v1, data)
    assert installed.path == (data / "models" / "tiny" / "1").resolve()
    assert active_bundle_path(data) == data / "models" / "tiny" / "1"
    import_bundle(v2, data)
    assert [(m.version, m.active) for m in list_models(data)] == [(1, False), (2, True)]
    assert active_bundle_path(data) == data / "models" / "tiny" / "2"
    assert json.loads((data / "models" / "active.json").read_text())["version"] == 2

    with pytest.raises(IntegrityError, match="older than installed version 2; rollback refused"):
        import_bundle(v1, data)
    with pytest.raises(ConflictError, match="already installed"):
        import_bundle(v2, data)
    # Refused imports leave no temporary directories behind.
    assert sorted(p.name for p in (data / "models").iterdir()) == [".installed.json", "active.json", "tiny"]
    with pytest.raises(NotFoundError):
        active_bundle_path(data, "other")


def test_import_refuses_wrongly_keyed_bundle(tmp_path: Path, tokenizer: Path) -> None:
    data = tmp_path / "data"
    pin_public_key(data, KEY.public_key(), "builder")
    foreign = make_bundle(tmp_path / "f", tokenizer, key=OTHER_KEY)
    with pytest.raises(IntegrityError, match="not a trusted model-signing key"):
        import_bundle(foreign, data)
    assert list_models(data) == []


def test_failed_build_leaves_nothing(tmp_path: Path, tokenizer: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_directory(out) as root:
        (root / "model.onnx").write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == [tokenizer]
    make_bundle(out, tokenizer)
    with pytest.raises(ModelError, match="already exists"):
        make_bundle(out, tokenizer)


def test_write_errors_are_one_line_and_leave_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ModelError, match=r"cannot write .*out: No space left on device"), staged_directory(out) as root:
        (root / "model.onnx.data").write_bytes(b"partial")
        raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="cannot create"), staged_directory(tmp_path / "file" / "b"):
        pass


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda b, o: _flip_byte(b / "model.onnx.data"), "file model.onnx.data does not match its manifest digest"),
        (lambda b, o: (b / "extra.bin").write_bytes(b"x"), "unexpected file extra.bin"),
        (lambda b, o: (b / "tokenizer.json").unlink(), "missing file tokenizer.json"),
        (lambda b, o: [shutil.copy(o / f, b / f) for f in ("manifest.json", "manifest.sig")],
         "does not match its manifest digest"),
    ],
    ids=["changed-file", "extra-file", "missing-file", "swapped-manifest"],
)
def test_import_hashes_while_copying_and_refuses_a_tampered_source(  # type: ignore[no-untyped-def]
    tmp_path: Path, tokenizer: Path, tamper, reason: str
) -> None:
    data = tmp_path / "data"
    pin_public_key(data, KEY.public_key(), "builder")
    source = make_bundle(tmp_path / "src", tokenizer)
    tamper(source, make_bundle(tmp_path / "other", tokenizer, scale=2.0))
    with pytest.raises(IntegrityError, match=reason):
        import_bundle(source, data)
    assert list_models(data) == []
    assert not [p for p in (data / "models").rglob("*") if p.name != "tiny"]  # no copy, no seal left


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from appliance.model import manifest

    hashed: list[str] = []
    real = manifest.sha256_file

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(manifest, "sha256_file", counting)
    return hashed


def test_installed_bundle_is_hashed_once_then_loads_from_its_seal(
    tmp_path: Path, tokenizer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    pin_public_key(data, KEY.public_key(), "builder")
    source = make_bundle(tmp_path / "src", tokenizer)
    hashed = _count_hashes(monkeypatch)
    installed = import_bundle(source, data)
    assert hashed == []  # the copy was hashed as it was written, not read back
    assert open_installed(installed.path, data).manifest.digest == installed.manifest.digest
    assert hashed == []

    # A file rewritten with its size and mtime restored: ctime still moved, so it is hashed, caught.
    target = installed.path / "model.onnx.data"
    before = target.stat()
    _flip_byte(target)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(IntegrityError, match=r"file model\.onnx\.data does not match its manifest digest"):
        open_installed(installed.path, data)
    assert hashed == ["model.onnx.data"]
    _flip_byte(target)  # put back: hashed once more, then sealed again
    hashed.clear()
    open_installed(installed.path, data)
    open_installed(installed.path, data)
    assert hashed == ["model.onnx.data"]

    # A seal is bound to the manifest it was hashed against, and a bad seal only costs a full hash.
    seal = installed.path.parent / ".1.sealed.json"
    document = json.loads(seal.read_text())
    seal.write_text(json.dumps({**document, "manifest": "0" * 64}))
    hashed.clear()
    open_installed(installed.path, data)
    assert sorted(hashed) == sorted(installed.manifest.files)
    seal.write_text("not json")
    hashed.clear()
    open_installed(installed.path, data)
    assert len(hashed) == len(installed.manifest.files)
    # `enclave model verify` (load_bundle) hashes everything, seal or not.
    hashed.clear()
    load_bundle(installed.path, trusted_keys=[KEY.public_key()])
    assert len(hashed) == len(installed.manifest.files)
