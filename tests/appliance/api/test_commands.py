"""``enclave demo`` and ``enclave serve`` as a newcomer and a script run them: real processes, real TLS."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ROOT = Path(__file__).resolve().parents[3]
NETGUARD = ROOT / "tests" / "helpers" / "netguard"


def enclave(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=300, env=ENV
    )


def read_announcement(proc: subprocess.Popen[str], keys: set[str]) -> tuple[dict[str, str], list[str]]:
    found: dict[str, str] = {}
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        key, sep, value = line.strip().partition("=")
        if sep and key in keys:
            found[key] = value
        if keys <= set(found):
            break
    return found, lines


def test_demo_serves_the_demo_model_and_cleans_up(tmp_path: Path) -> None:
    # The network guard refuses (and logs) any non-loopback connection the demo process attempts.
    netlog = tmp_path / "netguard.log"
    guarded = {
        **ENV,
        "PYTHONPATH": os.pathsep.join([str(NETGUARD), str(ROOT), ENV.get("PYTHONPATH", "")]),
        "ENCLAVE_NETGUARD_LOG": str(netlog),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=guarded,
    )
    try:
        found, lines = read_announcement(proc, {"ENCLAVE_URL", "ENCLAVE_CA", "ENCLAVE_TOKEN"})
        assert set(found) == {"ENCLAVE_URL", "ENCLAVE_CA", "ENCLAVE_TOKEN"}, "".join(lines)
        data_dir = next(
            line.split(": ", 1)[1].split(" ")[0] for line in lines if line.startswith("data directory:")
        )
        verify = ssl.create_default_context(cafile=found["ENCLAVE_CA"])
        headers = {"Authorization": f"Bearer {found['ENCLAVE_TOKEN']}"}
        with httpx.Client(base_url=found["ENCLAVE_URL"], verify=verify, headers=headers) as http:
            assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["deepseek-v4-demo"]
            r = http.post(
                "/v1/completions", json={"model": "deepseek-v4-demo", "prompt": "def", "max_tokens": 3}
            )
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
        assert proc.stdout is not None
        sign_in = proc.stdout.readline()
        assert sign_in.startswith("Sign in as 'demo' with password '")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert not Path(data_dir).exists()
    records = [json.loads(line) for line in netlog.read_text().splitlines()]
    assert any(r["event"] == "netguard.active" and r["pid"] == proc.pid for r in records)
    assert [r for r in records if r["event"] != "netguard.active"] == []


def test_serve_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    missing = enclave("serve", "--data", str(tmp_path / "nothing"))
    assert missing.returncode == 1
    assert missing.stderr.startswith("enclave: error: ") and missing.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr
    bad_port = enclave("serve", "--data", str(tmp_path), "--port", "70000")
    assert bad_port.returncode == 2 and "port must be 0..65535" in bad_port.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3"])
def test_serve_refuses_plain_http_off_loopback(tmp_path: Path, host: str) -> None:
    data = tmp_path / "data"
    assert enclave("init", "--data", str(data)).returncode == 0
    result = enclave("serve", "--data", str(data), "--host", host, "--port", "0", "--insecure-http")
    assert result.returncode == 1
    assert (
        result.stderr == f"enclave: error: plain HTTP is allowed only on loopback, not on {host!r}; use TLS\n"
    )
