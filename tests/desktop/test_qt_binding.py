"""The Qt binding keeps Python's reference counts: emitting a signal must not consume a reference to
the bool it returns. PySide6 6.12.0 does (every ``emit()`` drops one reference to ``True``), and the
client aborts after a few thousand emits — one streamed answer is hundreds ("Fatal Python error:
bool_dealloc"). Probed in a child process, since the failure is an abort."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
from desktop.qt import QObject, Signal
class Emitter(QObject):
    piece = Signal(object)
emitter = Emitter()
emitter.piece.connect(lambda piece: None)
before = sys.getrefcount(True)
for _ in range(100):
    emitter.piece.emit("x")
print(sys.getrefcount(True) - before, flush=True)
import os
os._exit(0)  # a binding with the bug aborts at shutdown; the count above is the answer
"""


def test_emitting_a_signal_keeps_the_reference_to_its_result() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    lost = -int(done.stdout.strip())
    import PySide6

    assert lost < 50, (f"PySide6 {PySide6.__version__}: 100 signal emits dropped {lost} references to True; "
                       "the client would abort mid-stream. Install another PySide6-Essentials (pyproject.toml "
                       "excludes 6.12.0).")


def test_the_start_up_check_refuses_such_a_binding_in_one_line() -> None:
    # Stands in for the broken binding: True's count reads 100 lower after the probe's emits.
    prelude = ("import sys; real = sys.getrefcount; seen = []\n"
               "def count(o):\n    seen.append(o)\n    return real(o) - (100 if len(seen) == 2 else 0)\n"
               "sys.getrefcount = count\n")
    code = prelude + "from desktop.entry import main\nsys.exit(main())"
    done = subprocess.run([sys.executable, "-c", code, "--self-test"], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("enclave-desktop: error: PySide6 ") and "PySide6-Essentials!=6.12.0" in line


def test_this_binding_passes_the_start_up_check() -> None:
    from desktop.qt import binding_problem

    assert binding_problem() is None
