"""``enclave model ...`` end to end: real checkpoints, real graphs, real signatures, one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.cli import main
from appliance.model.signing import public_pem
from tests.helpers.v4_release import make_reference, write_release


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private = tmp_path / "signing.pem"
    private.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public = tmp_path / "signing.pub"
    public.write_bytes(public_pem(key.public_key()))
    return private, public


@pytest.fixture(scope="module")
def release_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rel") / "tiny-v4"
    write_release(make_reference(), out, quantize=True, block=(16, 16))
    return out


def test_build_verify_import_list(release_ckpt: Path, keys: tuple[Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_MODEL_SIGNING_KEY", str(tmp_path / "local-key.pem"))
    private, public = keys
    out = tmp_path / "bundle"
    assert main(["model", "build", str(release_ckpt), str(out), "--signing-key", str(private), "--version", "3"]) == 0
    captured = capsys.readouterr()
    assert "tensors" in captured.err  # the progress bar
    assert (out / "manifest.sig").is_file() and (out / "model.onnx.data").is_file()

    assert main(["model", "verify", str(out), "--key", str(public)]) == 0
    assert "bundle tiny-v4 version 3 OK" in capsys.readouterr().out

    data = tmp_path / "data"
    assert main(["model", "import", str(out), "--data", str(data)]) == 1
    assert "is not an Enclave data directory" in capsys.readouterr().err
    assert main(["init", "--data", str(data)]) == 0
    capsys.readouterr()
    # Only this machine's own key is pinned: a bundle from another builder is refused.
    assert main(["model", "import", str(out), "--data", str(data)]) == 1
    assert "not a trusted model-signing key" in capsys.readouterr().err
    assert main(["model", "pubkey", "--signing-key", str(private)]) == 0
    exported = tmp_path / "exported.pub"
    exported.write_text(capsys.readouterr().out)
    assert main(["model", "trust", str(exported), "--name", "builder", "--data", str(data)]) == 0
    assert "trusting model-signing key" in capsys.readouterr().out
    assert main(["model", "import", str(out), "--data", str(data)]) == 0
    capsys.readouterr()
    assert main(["model", "list", "--data", str(data)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "VERSION", "DTYPE", "QUANT", "STAGES", "SIZE", "VERIFIED", "PATH"]
    assert row.split()[:5] == ["*", "tiny-v4", "3", "fp32", "none"] and " sealed " in row
    # A file touched since it was hashed: the next load re-hashes it, and the list says so.
    os.utime(data / "models" / "tiny-v4" / "3" / "tokenizer.json")
    assert main(["model", "list", "--data", str(data)]) == 0
    assert "re-hash at next load" in capsys.readouterr().out
    # Recorded in the database, with its audit event, for the admin API and policies.
    from sqlalchemy import select

    from appliance.audit.models import AuditEventRow
    from appliance.auth import admin
    from appliance.db.datadir import load_data_dir, open_database

    settings = load_data_dir(data)
    with open_database(settings) as (_, uow), uow() as session:
        (row,) = [m for m in admin.list_models(session) if m.name == "tiny-v4"]
        assert (row.version, row.path) == ("3", str(data / "models" / "tiny-v4" / "3"))
        actions = list(session.scalars(select(AuditEventRow.action)))
    assert "admin.model.installed" in actions
    # A second import of the same version is refused and records nothing more.
    assert main(["model", "import", str(out), "--data", str(data)]) == 1
    assert "already installed" in capsys.readouterr().err


def test_default_signing_key_is_created_once(release_ckpt: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    key_path = tmp_path / "cfg" / "model-signing-key.pem"
    monkeypatch.setenv("ENCLAVE_MODEL_SIGNING_KEY", str(key_path))
    assert main(["model", "build", str(release_ckpt), str(tmp_path / "a"), "--version", "1"]) == 0
    assert key_path.stat().st_mode & 0o077 == 0
    first = key_path.read_bytes()
    assert main(["model", "build", str(release_ckpt), str(tmp_path / "b"), "--version", "2"]) == 0
    assert key_path.read_bytes() == first
    assert (tmp_path / "a" / "manifest.sig").read_text().split('"key_id"')[1][:22] == (
        (tmp_path / "b" / "manifest.sig").read_text().split('"key_id"')[1][:22]
    )


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=300)


def test_bad_checkpoint_is_one_line_error_and_leaves_nothing(release_ckpt: Path, keys: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in release_ckpt.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    shard = broken / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-64])
    out = tmp_path / "out"
    result = _run_cli("model", "build", str(broken), str(out), "--signing-key", str(keys[0]))
    assert result.returncode == 1
    assert result.stderr.startswith("enclave: error: model-00001-of-00002.safetensors: truncated safetensors file")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "signing.pem", "signing.pub"]


def test_bad_options_and_tampering_are_refused(release_ckpt: Path, keys: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    private, public = keys
    assert main(["model", "build", str(release_ckpt), str(tmp_path / "x"), "--stages", "9",
                 "--signing-key", str(private)]) == 1
    assert "stages must be 1..3" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["model", "build", str(tmp_path / "nope"), str(tmp_path / "y"), "--signing-key", str(private)]) == 1
    assert "not a checkpoint directory" in capsys.readouterr().err

    out = tmp_path / "b"
    assert main(["model", "build", str(release_ckpt), str(out), "--signing-key", str(private), "--version", "1"]) == 0
    (out / "tokenizer.json").write_text("{}")
    assert main(["model", "verify", str(out), "--key", str(public)]) == 1
    assert "file tokenizer.json does not match its manifest digest" in capsys.readouterr().err


def test_init_pins_the_local_signing_key(release_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ENCLAVE_MODEL_SIGNING_KEY", str(tmp_path / "cfg" / "key.pem"))
    data = tmp_path / "data"
    assert main(["init", "--data", str(data)]) == 0
    assert [p.name for p in (data / "keys" / "trusted_models").iterdir()] == ["local-builder.pub"]
    # A bundle built here with the default key imports with no further step.
    assert main(["model", "build", str(release_ckpt), str(tmp_path / "b"), "--version", "5"]) == 0
    assert main(["model", "import", str(tmp_path / "b"), "--data", str(data)]) == 0
    assert "installed tiny-v4 version 5" in capsys.readouterr().out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupted_build_leaves_nothing(keys: tuple[Path, Path], tmp_path: Path, sig: signal.Signals) -> None:
    from appliance.model.demo import RANDOM_CONFIG, write_random_checkpoint

    kinds = ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"]
    big = {**RANDOM_CONFIG, "hidden_size": 256, "moe_intermediate_size": 256, "n_routed_experts": 16,
           "num_hidden_layers": 12, "layer_types": [kinds[i % 3] for i in range(12)],
           "mlp_layer_types": ["hash_moe"] + ["moe"] * 11}  # fmt: skip
    ckpt = write_random_checkpoint(tmp_path / "ckpt", big)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "model", "build", str(ckpt), str(out), "--signing-key", str(keys[0])],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the progress bar's first line: the build has started
    assert "tensors" in first
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "enclave: interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "signing.pem", "signing.pub"]
