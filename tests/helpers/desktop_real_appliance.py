"""Start a real appliance for the desktop tests: ``enclave demo --port 0`` (HTTPS on loopback, the
demo model, SQLite), plus an auditor and an admin added with ``enclave user add``, each having replaced its one-time
password with the one in ``AUDITOR`` / ``ADMIN``. ``settings`` are ``ENCLAVE_*`` variables for the appliance
(an LDAP directory, say: :mod:`tests.helpers.ldap_appliance`)."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers.accounts import choose_password, one_time_password

__all__ = ["RealAppliance", "enclave", "real_appliance"]

STARTUP_TIMEOUT_S = 300
AUDITOR = ("auditor1", "Audit-pass-for-tests-2026")
ADMIN = ("admin1", "Admin-pass-for-tests-2026")


@dataclass(frozen=True)
class RealAppliance:
    url: str
    ca_file: Path
    fingerprint: str
    token: str
    username: str
    password: str
    data_dir: Path


def enclave(*args: str) -> str:
    """``enclave ARGS`` (as ``python -m appliance``); its output, or an error with what it said."""
    done = subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"enclave {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _add_user(url: str, ca_file: str, data_dir: Path, username: str, role: str, password: str) -> None:
    """``enclave user add``, then the new user picks ``password`` in place of the one-time one."""
    added = enclave("user", "add", username, "--role", role, "--data", str(data_dir))
    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=ca_file), timeout=60) as http:
        choose_password(http, username, one_time_password(added), password)


@contextmanager
def real_appliance(data_dir: Path, settings: Mapping[str, str] | None = None) -> Iterator[RealAppliance]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "demo", "--port", "0", "--data", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, **(settings or {})},
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Sign in as"):
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(STARTUP_TIMEOUT_S)
        text = "".join(lines)
        values = dict(re.findall(r"^(ENCLAVE_\w+)=(\S+)$", text, re.M))
        login = re.search(r"Sign in as '([^']+)' with password '([^']+)'", text)
        fingerprint = re.search(r"fingerprint[^:]*: ([0-9A-F:]{95})", text)
        if proc.poll() is not None or login is None or fingerprint is None or "ENCLAVE_URL" not in values:
            raise RuntimeError("enclave demo did not start:\n" + text[-3000:])
        for (name, password), role in ((AUDITOR, "auditor"), (ADMIN, "admin")):
            _add_user(values["ENCLAVE_URL"], values["ENCLAVE_CA"], data_dir, name, role, password)
        yield RealAppliance(
            url=values["ENCLAVE_URL"], ca_file=Path(values["ENCLAVE_CA"]), fingerprint=fingerprint.group(1),
            token=values["ENCLAVE_TOKEN"], username=login.group(1), password=login.group(2), data_dir=data_dir,
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        reader.join(5)
