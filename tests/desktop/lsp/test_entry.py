"""The ``enclave-lsp`` command: declared in pyproject, runs as ``python -m desktop.lsp``, says what
to install without the extra, and imports no Qt."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from shared.version import VERSION

ROOT = Path(__file__).resolve().parents[3]


def _run(prelude: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys; {prelude}; from desktop.lsp.entry import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_console_script_points_at_the_entry() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["enclave-lsp"] == "desktop.lsp.entry:main"
    done = subprocess.run([sys.executable, "-m", "desktop.lsp", "--version"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == f"enclave-lsp {VERSION}"


def test_missing_extra_is_one_line() -> None:
    result = _run("sys.modules['pygls'] = None", "--stdio")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "enclave-lsp: error: the language server needs pygls; install it with: pip install 'enclave-codegen[desktop]'"
    ]


def test_server_imports_no_qt() -> None:
    code = "import sys, desktop.lsp.server; sys.exit(any(m.startswith('PySide6') or m == 'desktop.qt' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], timeout=120, cwd=ROOT).returncode == 0


def test_setup_errors_are_one_line(tmp_path: Path) -> None:
    env_code = f"import os; os.environ['XDG_CONFIG_HOME'] = {str(tmp_path)!r}"
    result = _run(env_code, "status")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("enclave-lsp: error: no appliance is set up")
