"""A simulated air-gapped site for the installer tests: run install.sh, serve, sign in, generate.

Every process started "on the site" gets a clean environment (no pip settings, no source tree on
``PYTHONPATH``) plus the network guard in ``tests/helpers/netguard``: a non-loopback connection
attempt fails and is recorded in the site's log, which the tests read.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

NETGUARD_DIR = Path(__file__).resolve().parent / "netguard"
# The interpreter the site's Python would be: the one this virtual environment was made from.
BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"


@dataclass
class Site:
    root: Path
    prefix: Path
    data: Path
    netlog: Path

    @property
    def enclave(self) -> Path:
        return self.prefix / "current" / "bin" / "enclave"

    def env(self) -> dict[str, str]:
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PIP_", "ENCLAVE_", "PYTHON", "VIRTUAL_ENV")) and k != "PATH"
        }
        keep["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        keep["HOME"] = str(self.root / "home")
        keep["PYTHONPATH"] = str(NETGUARD_DIR)
        keep["ENCLAVE_NETGUARD_LOG"] = str(self.netlog)
        # Keeps the model tools' per-user key inside the test's directory.
        keep["ENCLAVE_MODEL_SIGNING_KEY"] = str(self.root / "home" / "model-signing-key.pem")
        return keep

    def run(
        self, argv: Sequence[str | Path], *, stdin: str | None = None, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        (self.root / "home").mkdir(exist_ok=True)
        return subprocess.run(
            [str(a) for a in argv],
            cwd=self.root,
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def install(self, bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            [
                "bash",
                bundle / "install.sh",
                "--prefix",
                self.prefix,
                "--data",
                self.data,
                "--python",
                BASE_PYTHON,
                "--no-service-user",
                "--no-systemd",
                *extra,
            ]
        )

    def outbound_attempts(self) -> list[dict[str, Any]]:
        return [r for r in self.netlog_records() if r["event"] != "netguard.active"]

    def netlog_records(self) -> list[dict[str, Any]]:
        if not self.netlog.exists():
            return []
        return [json.loads(line) for line in self.netlog.read_text().splitlines() if line.strip()]


@dataclass
class Server:
    url: str
    ca: str
    pid: int
    output: list[str]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url, verify=ssl.create_default_context(cafile=self.ca), headers=headers, timeout=120
        )


@contextmanager
def serving(site: Site, *, timeout: float = 300) -> Iterator[Server]:
    """``enclave serve --port 0`` from the installed release; stopped (SIGTERM) on exit."""
    (site.root / "home").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [str(site.enclave), "serve", "--data", str(site.data), "--port", "0"],
        cwd=site.root,
        env=site.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while not {"ENCLAVE_URL", "ENCLAVE_CA"} <= set(found):
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("enclave serve did not announce itself:\n" + "".join(output)) from None
            if line is None:
                raise AssertionError("enclave serve exited:\n" + "".join(output))
            key, sep, value = line.partition("=")
            if sep and key in ("ENCLAVE_URL", "ENCLAVE_CA"):
                found[key] = value
        yield Server(url=found["ENCLAVE_URL"], ca=found["ENCLAVE_CA"], pid=proc.pid, output=output)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def login(server: Server, username: str, password: str) -> str:
    with server.client() as c:
        r = c.post("/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def generate(server: Server, token: str, prompt: str = "def add(a, b):") -> dict[str, Any]:
    with server.client(token) as c:
        models = c.get("/v1/models")
        assert models.status_code == 200, models.text
        model = models.json()["data"][0]["id"]
        r = c.post(
            "/v1/chat/completions",
            json={
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 8,
                "temperature": 0,
            },
        )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def copy_bundle(src: Path, dst: Path) -> Path:
    """A copy for tampering: big files hard-linked, the files a test rewrites copied.

    Tampering with a file always writes a new file (never through a link), so the original stays
    intact; :func:`replace_file` does that.
    """

    def link_or_copy(s: str, d: str) -> object:
        if Path(s).parent == src or Path(s).suffix in (".json", ".sh", ".pub", ".sig"):
            return shutil.copy2(s, d)
        os.link(s, d)
        return d

    shutil.copytree(src, dst, copy_function=link_or_copy)
    return dst


def replace_file(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


MIGRATION_REVISION = "0003_e2e_upgrade"
MIGRATION_TABLE = "e2e_upgrade_marker"


def wheel_with_migration(src: Path, dest_dir: Path, *, version: str, down_revision: str) -> Path:
    """A newer build of the appliance wheel that carries one more (harmless) schema migration.

    Lets an upgrade test see a real migration run: the installed release is at ``down_revision``,
    the new one adds a table in ``MIGRATION_REVISION``. Metadata, dist-info name and RECORD are
    rewritten so pip installs it as ``version``.
    """
    import base64
    import hashlib
    import zipfile

    old_version = src.name.split("-")[1]
    old_info, new_info = f"enclave_codegen-{old_version}.dist-info/", f"enclave_codegen-{version}.dist-info/"
    migration = (
        f'"""Test-only migration (tests/helpers/offline_site.py).\n\nRevision ID: {MIGRATION_REVISION}\n"""\n\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f'revision = "{MIGRATION_REVISION}"\ndown_revision = "{down_revision}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        f'def upgrade() -> None:\n    op.create_table("{MIGRATION_TABLE}", sa.Column("id", sa.Integer(), primary_key=True))\n\n\n'
        f'def downgrade() -> None:\n    op.drop_table("{MIGRATION_TABLE}")\n'
    ).encode()
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(src) as zin:
        for item in zin.infolist():
            name = item.filename.replace(old_info, new_info)
            data = zin.read(item)
            if name == new_info + "METADATA":
                data = data.replace(
                    f"\nVersion: {old_version}\n".encode(), f"\nVersion: {version}\n".encode()
                )
            files[name] = data
    files[f"migrations/versions/{MIGRATION_REVISION}.py"] = migration
    record_lines = []
    for name, data in files.items():
        if name == new_info + "RECORD":
            continue
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{name},sha256={digest},{len(data)}")
    record_lines.append(f"{new_info}RECORD,,")
    files[new_info + "RECORD"] = ("\n".join(record_lines) + "\n").encode()
    out = dest_dir / f"enclave_codegen-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in files.items():
            zout.writestr(name, data)
    return out
