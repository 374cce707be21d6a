"""The files a bundle ships besides wheels: systemd unit, nginx sample, install script; builder errors."""

from __future__ import annotations

import importlib.resources
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.cli import main as enclave
from installers.offline.build import build_bundle
from shared.errors import InputError


def _resource(name: str) -> str:
    return importlib.resources.files("installers.offline").joinpath(name).read_text(encoding="utf-8")


def _directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


def test_systemd_unit_is_hardened() -> None:
    d = _directives(_resource("enclave.service"))
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["PrivateTmp"] == ["yes"]
    assert d["ProtectHome"] == ["yes"]
    assert d["ReadWritePaths"] == ["/var/lib/enclave"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert d["IPAddressDeny"] == ["any"]
    assert d["IPAddressAllow"] == ["localhost"]
    assert d["CapabilityBoundingSet"] == [""]
    assert d["User"] == ["enclave"]
    assert d["ExecStart"] == ["/opt/enclave/current/bin/enclave serve --data /var/lib/enclave"]
    # Where to add the site's ranges is documented next to the deny-all rule.
    assert re.search(r"^#\s+IPAddressAllow=\d", _resource("enclave.service"), re.M)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    # Render it the way install.sh does, with an executable at ExecStart (verify checks for one).
    prefix = tmp_path / "opt"
    (prefix / "current" / "bin").mkdir(parents=True)
    exe = prefix / "current" / "bin" / "enclave"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = (
        _resource("enclave.service")
        .replace("/opt/enclave", str(prefix))
        .replace("User=enclave", "User=root")
        .replace("Group=enclave", "Group=root")
    )
    path = tmp_path / "enclave.service"
    path.write_text(unit)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    # systemd-analyze exits 0 on unknown keys and bad values, but names them: no output is the pass.
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "" and proc.stdout.strip() == ""


def _nginx_blocks(conf: str) -> list[str]:
    text = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    depth = 0
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, "unbalanced braces"
    assert depth == 0, "unbalanced braces"
    # Every statement ends in ';' or opens a block.
    for line in text.splitlines():
        line = line.strip()
        if line and not line.endswith((";", "{", "}")):
            raise AssertionError(f"unterminated nginx statement: {line!r}")
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_nginx_sample_balances_several_replicas_and_streams_sse() -> None:
    lines = _nginx_blocks(_resource("nginx.conf"))
    servers = [ln for ln in lines if re.match(r"server \S+:\d+", ln)]
    assert len(servers) >= 2
    assert "proxy_buffering off;" in lines
    assert "proxy_ssl_verify on;" in lines
    assert any(ln.startswith("listen 443 ssl") for ln in lines)
    assert "proxy_pass https://enclave_replicas;" in lines
    timeout = next(ln for ln in lines if ln.startswith("proxy_read_timeout"))
    assert int(re.search(r"(\d+)s", timeout).group(1)) >= 600  # type: ignore[union-attr]


def test_install_script_is_valid_bash() -> None:
    script = _resource("install.sh")
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    # pip is told to use this bundle only.
    assert "PIP_CONFIG_FILE=/dev/null" in script and "--no-index" in script


def test_build_refuses_an_existing_output(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="already exists"):
        build_bundle(tmp_path / "out")


def test_build_refuses_a_directory_that_is_not_a_model_bundle(tmp_path: Path) -> None:
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(InputError, match="not a model bundle"):
        build_bundle(tmp_path / "out", models=[tmp_path / "notamodel"])
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out.signing-key.pem").exists()


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    fake = tmp_path / "src" / "enclave_codegen-0.1.0-py3-none-any.whl"
    fake.parent.mkdir()
    fake.write_bytes(b"not really a wheel")
    out_dir = tmp_path / "site"
    out_dir.mkdir()
    with pytest.raises(InputError, match="pip download"):
        # No wheel exists for this platform: pip fails after the staging directory was filled.
        build_bundle(out_dir / "bundle", wheel=fake, platforms=["no_such_platform"], pin_installed=False)
    assert list(out_dir.iterdir()) == []


def test_cli_build_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notamodel").mkdir()
    code = enclave(["bundle", "build", str(tmp_path / "out"), "--model", str(tmp_path / "notamodel")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("enclave: error: ") and err.count("\n") == 1 and "not a model bundle" in err
    code = enclave(["bundle", "build", str(tmp_path / "out"), "--signing-key", str(tmp_path / "nokey.pem")])
    assert code == 1
    assert "signing key" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_build_needs_the_key_that_signed_each_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_MODEL_SIGNING_KEY", str(tmp_path / "no-default-key.pem"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "bundle.json").write_text("{}")
    (model / "manifest.json").write_text('{"name": "m", "version": 3}')
    (model / "manifest.sig").write_text(
        '{"algorithm": "ed25519", "key_id": "0123456789abcdef", "signature": ""}'
    )
    with pytest.raises(
        InputError, match="signed by key 0123456789abcdef; pass its public key with --model-key"
    ):
        build_bundle(tmp_path / "out", models=[model])
    (model / "manifest.sig").unlink()
    with pytest.raises(InputError, match=r"no readable manifest\.sig"):
        build_bundle(tmp_path / "out", models=[model])
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.signing-key.pem").exists()
