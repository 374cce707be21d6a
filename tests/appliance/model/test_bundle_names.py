"""A bundle's name and version are identifiers, whoever signed it (issue 12 item 13: a bundle named
``../../ESCAPED`` signed by a trusted key installed outside the data directory)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from appliance.model.signing import key_id, pin_public_key
from appliance.model.store import import_bundle, list_models
from shared.errors import InputError, IntegrityError
from tests.appliance.model.test_bundle import KEY, make_bundle


@pytest.fixture
def tokenizer(tmp_path: Path) -> Path:
    from tokenizers import Tokenizer, models

    path = tmp_path / "tok.json"
    Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token="a")).save(str(path))
    return path


def _resign_as(bundle: Path, name: object, version: object) -> None:
    """What a trusted key's holder can make by hand: bundle.json and the manifest renamed, and the
    manifest signed again (the builder itself refuses such names)."""
    info_path = bundle / "bundle.json"
    info = json.loads(info_path.read_text())
    info.update(name=name, version=version)
    info_path.write_text(json.dumps(info))
    manifest = json.loads((bundle / "manifest.json").read_text())
    data = info_path.read_bytes()
    manifest["files"]["bundle.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest.update(name=name, version=version)
    raw = json.dumps(manifest).encode()
    (bundle / "manifest.json").write_bytes(raw)
    signature = {
        "algorithm": "ed25519",
        "key_id": key_id(KEY.public_key()),
        "signature": base64.b64encode(KEY.sign(raw)).decode(),
    }
    (bundle / "manifest.sig").write_text(json.dumps(signature))


@pytest.mark.parametrize(
    ("name", "version", "reason"),
    [
        ("../../ESCAPED", 1, "bundle name '../../ESCAPED' is not an identifier"),
        ("ESCAPED/..", 1, "is not an identifier"),
        ("..", 1, "is not an identifier"),
        (".hidden", 1, "is not an identifier"),
        ("tiny", -1, "bundle version -1 is not a non-negative integer"),
        ("tiny", True, "is not a non-negative integer"),
    ],
)
def test_a_signed_bundle_with_a_path_for_a_name_is_refused(
    tmp_path: Path,
    tokenizer: Path,
    name: object,
    version: object,
    reason: str,
) -> None:
    data = tmp_path / "site" / "data"
    pin_public_key(data, KEY.public_key(), "builder")
    bundle = make_bundle(tmp_path / "evil", tokenizer)
    _resign_as(bundle, name, version)
    with pytest.raises(IntegrityError, match=reason):
        import_bundle(bundle, data)
    assert not (tmp_path / "site" / "ESCAPED").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil", "site", "tok.json"]
    assert list_models(data) == []


def test_the_builder_refuses_a_name_that_is_a_path(tmp_path: Path, tokenizer: Path) -> None:
    from appliance.model.manifest import write_manifest

    with pytest.raises(InputError, match="not an identifier"):
        write_manifest(tmp_path, KEY, name="../x", version=1)
