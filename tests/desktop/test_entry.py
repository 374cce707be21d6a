"""``enclave-desktop`` without the [desktop] extra says what to install; with it, runs the client."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.version import VERSION


def _run(prelude: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys; {prelude}; from desktop.entry import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("blocked", ["PySide6", "keyring"])
def test_missing_desktop_extra_is_one_line_and_exit_1(blocked: str) -> None:
    result = _run(f"sys.modules[{blocked!r}] = None")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"enclave-desktop: error: the desktop client needs {blocked}; "
        "install it with: pip install 'enclave-codegen[desktop]'"
    ]
    assert "Traceback" not in result.stderr


def test_with_the_extra_the_client_runs() -> None:
    result = _run("pass", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"enclave-desktop {VERSION}"
