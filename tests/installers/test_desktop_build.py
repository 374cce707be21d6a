"""The desktop client's PyInstaller one-folder build starts and passes its own self-test, offscreen."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from installers.desktop.build import build, executable, self_test

pytestmark = pytest.mark.slow


def test_pyinstaller_build_runs_its_self_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("PyInstaller")
    if importlib.util.find_spec("desktop.app") is None:
        pytest.skip("the desktop client (desktop/app.py) does not exist yet")
    exe = build(tmp_path / "dist", tmp_path / "work")
    assert exe == executable(tmp_path / "dist")
    # Nothing from the source tree may leak in: run from elsewhere, with no PYTHONPATH.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    result = self_test(exe)
    assert result.returncode == 0, f"self-test failed:\n{result.stdout}\n{result.stderr}"
    # The client ships without the server side and without test-only packages.
    shipped = {p.name.split(".")[0].lower() for p in (exe.parent / "_internal").iterdir()}
    assert not shipped & {"torch", "transformers", "onnxruntime", "appliance"}, sorted(shipped)
    assert "pyside6" in shipped
