"""The appliance makes no outbound connection: init, model import, serve and a generation, guarded.

Runs this checkout's `enclave` (the installed-bundle variant is in test_offline_e2e.py) with the
network guard from tests/helpers/netguard: any non-loopback connection attempt fails loudly and is
recorded. The test sees the guard active in every process and no attempt recorded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from appliance.model.signing import load_private_key, pin_public_key
from installers.offline.manifest import generate_signing_key
from tests.helpers.accounts import choose_password, one_time_password
from tests.helpers.offline_site import Site, generate, login, serving

PASSWORD = "Tessellated-Harbour-Lantern-2026"


def _site(tmp_path: Path) -> Site:
    site = Site(
        root=tmp_path, prefix=tmp_path / "opt", data=tmp_path / "data", netlog=tmp_path / "netguard.log"
    )
    site.prefix.mkdir()
    # "Installed" = this checkout's environment.
    (site.prefix / "current").symlink_to(Path(sys.prefix))
    return site


def test_serve_and_generate_attempt_no_outbound_connection(tmp_path: Path) -> None:
    site = _site(tmp_path)
    model_key = tmp_path / "model-signing.pem"
    generate_signing_key(model_key)
    steps: list[list[str | Path]] = [
        [site.enclave, "init", "--data", site.data],
        [site.enclave, "model", "demo", tmp_path / "demo", "--signing-key", model_key],
    ]
    for argv in steps:
        proc = site.run(argv)
        assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    # Trust the demo model's signer, as install.sh does with a bundle's model-keys/.
    pin_public_key(site.data, load_private_key(model_key).public_key(), "test")
    proc = site.run([site.enclave, "model", "import", tmp_path / "demo" / "bundle", "--data", site.data])
    assert proc.returncode == 0, proc.stderr
    proc = site.run([site.enclave, "user", "add", "dev", "--data", site.data])
    assert proc.returncode == 0, proc.stderr
    with serving(site) as server:
        with server.client() as c:
            choose_password(c, "dev", one_time_password(proc.stdout), PASSWORD)
        body = generate(server, login(server, "dev", PASSWORD))
    assert body["usage"]["completion_tokens"] >= 1
    active = [r for r in site.netlog_records() if r["event"] == "netguard.active"]
    assert any(r["pid"] == server.pid for r in active)
    assert len(active) >= 5  # init, model demo, import, user add, serve
    assert site.outbound_attempts() == []


def test_the_guard_refuses_and_records(tmp_path: Path) -> None:
    site = _site(tmp_path)
    proc = site.run(
        [
            site.prefix / "current" / "bin" / "python",
            "-c",
            "import urllib.request as u; u.urlopen('https://pypi.org', timeout=5)",
        ]
    )
    assert proc.returncode != 0 and "netguard: outbound connection attempt to 'pypi.org'" in proc.stderr
    assert [r["address"] for r in site.outbound_attempts()] == ["'pypi.org'"]
    loop = site.run(
        [
            site.prefix / "current" / "bin" / "python",
            "-c",
            "import socket; socket.getaddrinfo('localhost', 80)",
        ]
    )
    assert loop.returncode == 0, loop.stderr
    assert len(site.outbound_attempts()) == 1
