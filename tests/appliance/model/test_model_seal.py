"""With write access to the data directory (issue 12 item 14): a changed weight with refreshed seal
stamps is not served (the seal is a MAC with the service's key), and ``active.json`` pointed at an
older version is refused at load, even with the newer copy deleted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from appliance.model import manifest
from appliance.model.signing import pin_public_key
from appliance.model.store import active_bundle_path, import_bundle, open_installed
from shared.errors import IntegrityError
from tests.appliance.model.test_bundle import KEY, make_bundle


@pytest.fixture
def tokenizer(tmp_path: Path) -> Path:
    from tokenizers import Tokenizer, models

    path = tmp_path / "tok.json"
    Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a")).save(str(path))
    return path


def test_refreshed_seal_stamps_over_a_changed_weight_are_not_a_seal(tmp_path: Path, tokenizer: Path) -> None:
    data = tmp_path / "data"
    pin_public_key(data, KEY.public_key(), "builder")
    installed = import_bundle(make_bundle(tmp_path / "src", tokenizer), data)
    weight = installed.path / "model.onnx.data"
    raw = bytearray(weight.read_bytes())
    raw[100] ^= 0xFF
    weight.write_bytes(bytes(raw))
    # The attacker rewrites the seal with the file's new stamp, as the old seal (a cache) allowed.
    seal = installed.path.parent / ".1.sealed.json"
    document = json.loads(seal.read_text())
    document["stamps"]["model.onnx.data"] = manifest.file_stamp(weight)
    seal.write_text(json.dumps(document))
    with pytest.raises(IntegrityError, match=r"model\.onnx\.data does not match its manifest digest"):
        open_installed(installed.path, data)


def test_active_pointed_at_an_older_version_is_refused_at_load(tmp_path: Path, tokenizer: Path) -> None:
    data = tmp_path / "data"
    pin_public_key(data, KEY.public_key(), "builder")
    v1 = import_bundle(make_bundle(tmp_path / "v1", tokenizer, version=1), data)
    v2 = import_bundle(make_bundle(tmp_path / "v2", tokenizer, version=2, scale=2.0), data)
    active = data / "models" / "active.json"
    active.write_text(json.dumps({"name": "tiny", "version": 1, "path": str(v1.path)}))
    shutil.rmtree(v2.path)  # and the newer copy gone, so "newest installed" is v1 again
    path = active_bundle_path(data)
    assert path == v1.path
    with pytest.raises(IntegrityError, match="older than version 2, installed before; rollback refused"):
        open_installed(path, data)


def test_a_forged_installed_list_is_refused(tmp_path: Path, tokenizer: Path) -> None:
    data = tmp_path / "data"
    pin_public_key(data, KEY.public_key(), "builder")
    v1 = import_bundle(make_bundle(tmp_path / "v1", tokenizer, version=1), data)
    (data / "models" / ".installed.json").write_text(json.dumps({"versions": {"tiny": 0}, "mac": "0" * 64}))
    with pytest.raises(IntegrityError, match="MAC does not verify"):
        open_installed(v1.path, data)
