"""The real client on a real X server (Xvfb started here) for a fresh user (empty HOME, no D-Bus session,
so no keyring daemon): ``enclave-desktop --url --ca`` passes its start-up check, maps its main window and
the connect dialog for that appliance (seen by xdotool, as a window manager would)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.desktop_tls import make_ca

pytestmark = pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")),
                                reason="needs Xvfb and xdotool (.ci/run installs them)")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def display(tmp_path: Path) -> Iterator[str]:
    proc = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    number = proc.stdout.readline().strip()
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _windows(env: dict[str, str], name: str) -> list[str]:
    out = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", name], env=env,
                         capture_output=True, text=True, check=False)
    return out.stdout.split()


def test_client_starts_on_a_plain_x_session_without_a_keyring(display: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ca = make_ca().write(tmp_path / "ca.pem")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "DISPLAY": display,
           "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8"}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from desktop.entry import main; sys.exit(main())",
                             "--url", "https://127.0.0.1:9", "--ca", str(ca)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if _windows(env, "^Enclave$") and _windows(env, "Connect to an Enclave appliance"):
                break
            time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()[0]
        assert _windows(env, "^Enclave$"), "the main window did not map"
        assert _windows(env, "Connect to an Enclave appliance"), "the connect dialog for --url did not open"
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "Traceback" not in output and "could not load the Qt platform plugin" not in output, output
