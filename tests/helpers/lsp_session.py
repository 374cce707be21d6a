"""Running ``enclave-lsp`` in tests: a per-test home (XDG config/cache, a keyring file) so the
server's profile and credential are the test's, and a real appliance audit trail to check.

``FileKeyring`` is a test double for the OS keyring that a *subprocess* can share with the test
(``PYTHON_KEYRING_BACKEND`` selects it, the keyring library's own switch): the product still goes
through the keyring API exactly as with the system keyring.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

from desktop.client.api import ApplianceClient, AuditQuery
from tests.helpers.desktop_real_appliance import AUDITOR, RealAppliance

__all__ = ["FileKeyring", "LspHome", "audit_records", "auditor_client", "lsp_command", "wait_for"]

ROOT = Path(__file__).resolve().parents[2]
LSP_COMMAND = [sys.executable, "-m", "desktop.lsp"]
_KEYRING_ENV = "ENCLAVE_TEST_KEYRING_FILE"


class FileKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def _path(self) -> Path:
        return Path(os.environ[_KEYRING_ENV])

    def _load(self) -> dict[str, str]:
        try:
            return dict(json.loads(self._path().read_text()))
        except FileNotFoundError:
            return {}

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}\n{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load() | {f"{service}\n{username}": password}
        self._path().write_text(json.dumps(data))

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if data.pop(f"{service}\n{username}", None) is None:
            raise PasswordDeleteError("no such secret")
        self._path().write_text(json.dumps(data))


class LspHome:
    """One user's files for the language server: where XDG points, and the keyring file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.keyring_file = path / "keyring.json"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "XDG_CONFIG_HOME": str(self.path / "config"),
            "XDG_CACHE_HOME": str(self.path / "cache"),
            "XDG_DATA_HOME": str(self.path / "data"),
            "PYTHON_KEYRING_BACKEND": "tests.helpers.lsp_session.FileKeyring",
            _KEYRING_ENV: str(self.keyring_file),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }

    def secrets(self) -> dict[str, str]:
        return json.loads(self.keyring_file.read_text()) if self.keyring_file.exists() else {}


def lsp_command(home: LspHome, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``enclave-lsp ARGS`` (as ``python -m desktop.lsp``) in ``home``."""
    return subprocess.run([*LSP_COMMAND, *args], input=stdin, capture_output=True, text=True, env=home.env, timeout=120, cwd=ROOT)


def connect_and_sign_in(home: LspHome, appliance: RealAppliance, token: str | None = None) -> None:
    done = lsp_command(home, "connect", appliance.url, str(appliance.ca_file), "--fingerprint", appliance.fingerprint)
    assert done.returncode == 0, done.stderr
    done = lsp_command(home, "sign-in", "--token-stdin", stdin=(token or appliance.token) + "\n")
    assert done.returncode == 0, done.stderr


def auditor_client(appliance: RealAppliance) -> ApplianceClient:
    client = ApplianceClient(appliance.url, ca_file=appliance.ca_file)
    client.token = client.login(*AUDITOR).token
    return client


def audit_records(auditor: ApplianceClient, actor: str, prefix: str = "generation.") -> list[dict[str, Any]]:
    """The actor's audit records whose action starts with ``prefix``, newest first."""
    return list(auditor.audit_events(AuditQuery(actor=actor, action=prefix), limit=200)["records"])


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)
