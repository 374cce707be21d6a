from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from desktop.qt import qWarning

ROOT = Path(__file__).resolve().parents[2]


def test_qt_warnings_are_caught_by_the_fixture(qt_warnings_fail: list[str]) -> None:
    qWarning("something odd")
    assert qt_warnings_fail == ["something odd"]
    qt_warnings_fail.clear()  # expected here; any other test with a warning fails


def test_self_test_opens_the_main_window_offscreen_and_exits_0(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "c"), "XDG_CACHE_HOME": str(tmp_path / "k")}
    env.pop("QT_QPA_PLATFORM", None)  # --self-test must pick offscreen by itself
    done = subprocess.run([sys.executable, "-m", "desktop.app", "--self-test"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "self-test: ok" in done.stdout
    assert not (tmp_path / "c" / "enclave-desktop").exists()  # the self-test leaves no profile behind


def test_entry_point_resolves_to_main() -> None:
    from importlib.metadata import entry_points

    import desktop.entry

    # The command checks for the [desktop] extra, then runs desktop.app.main (tests/desktop/test_entry.py).
    [ep] = entry_points(group="console_scripts", name="enclave-desktop")
    assert ep.load() is desktop.entry.main
