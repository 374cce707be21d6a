"""The serve runtime as ``enclave demo`` runs it (a subprocess: HTTPS on loopback, the demo model on
ONNX Runtime, SQLite): audit forwarding to a real syslog collector."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.appliance.api.test_commands import read_announcement
from tests.helpers.accounts import choose_password, one_time_password
from tests.helpers.syslog_collector import SyslogCollector

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@dataclass
class Demo:
    url: str
    ca: str
    token: str
    data_dir: Path
    collector: SyslogCollector

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=self.ca), headers=headers)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    collector = SyslogCollector()
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "demo", "--port", "0", "--data", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**ENV, "ENCLAVE_AUDIT_SYSLOG": collector.address},
    )
    try:
        found, lines = read_announcement(proc, {"ENCLAVE_URL", "ENCLAVE_CA", "ENCLAVE_TOKEN"})
        assert len(found) == 3, "".join(lines)
        yield Demo(found["ENCLAVE_URL"], found["ENCLAVE_CA"], found["ENCLAVE_TOKEN"], data_dir, collector)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        collector.close()


def _forwarded(collector: SyslogCollector, action: str, deadline_s: float = 60.0) -> list[dict[str, object]]:
    """The forwarded records of ``action`` once at least one has arrived (the forwarder polls)."""
    end = time.monotonic() + deadline_s
    while True:
        records = [json.loads(m.split("\ufeff", 1)[1]) for m in collector.messages()]
        found = [r for r in records if r["action"] == action]
        if found or time.monotonic() > end:
            return found
        time.sleep(0.2)


def test_a_generation_is_forwarded_to_the_syslog_collector(demo: Demo) -> None:
    with demo.client() as http:
        r = http.post("/v1/completions", json={"model": "deepseek-v4-demo", "prompt": "def", "max_tokens": 3})
        assert r.status_code == 200, r.text
        request_id = r.headers["x-request-id"]
    [completed] = [r for r in _forwarded(demo.collector, "generation.completed") if r["request_id"] == request_id]
    [requested] = [r for r in _forwarded(demo.collector, "generation.requested") if r["request_id"] == request_id]
    assert completed["actor"] == requested["actor"] == "demo"
    assert int(str(completed["seq"])) > int(str(requested["seq"]))
    # Everything from the first record on, in order and without gaps: init's records were forwarded too.
    seqs = [json.loads(m.split("\ufeff", 1)[1])["seq"] for m in demo.collector.messages()]
    assert seqs == list(range(1, len(seqs) + 1))
    assert all(m.startswith("<") and " enclave - audit - " in m for m in demo.collector.messages())
    assert (demo.data_dir / "audit_syslog.cursor").exists()


def test_the_demo_model_is_recorded_so_admin_models_lists_it(demo: Demo) -> None:
    password = "Admin-pass-for-runtime-2026"
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "user", "add", "boss", "--role", "admin", "--data", str(demo.data_dir)],
        capture_output=True, text=True, timeout=120, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with demo.client() as http:
        choose_password(http, "boss", one_time_password(done.stdout), password)
        login = http.post("/v1/auth/login", json={"username": "boss", "password": password})
        assert login.status_code == 200, login.text
        r = http.get("/v1/admin/models", headers={"Authorization": f"Bearer {login.json()['token']}"})
    assert r.status_code == 200, r.text
    [model] = r.json()
    assert (model["name"], model["active"]) == ("deepseek-v4-demo", True)
    assert Path(model["path"]).is_dir() and Path(model["path"]).is_relative_to(demo.data_dir)
    [installed] = _forwarded(demo.collector, "admin.model.installed")
    assert installed["actor"] == "cli:demo" and installed["target"] == f"model:deepseek-v4-demo@{model['version']}"
