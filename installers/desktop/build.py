"""Build the desktop client with PyInstaller and, optionally, run the built client's self-test.

    python -m installers.desktop.build [--dist DIR] [--work DIR] [--self-test]

The result is a one-folder build, ``DIR/enclave-desktop/`` (``Enclave.app`` next to it on macOS),
with the executable ``enclave-desktop`` (``enclave-desktop.exe`` on Windows) inside. ``--self-test``
then runs ``enclave-desktop --self-test`` from the build, offscreen, and fails the build if it fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.errors import InputError

__all__ = ["SPEC", "build", "executable", "main", "self_test"]

SPEC = Path(__file__).with_name("enclave-desktop.spec")
NAME = "enclave-desktop"


def executable(dist: Path) -> Path:
    """Where the build in ``dist`` keeps the client's executable on this platform."""
    suffix = ".exe" if sys.platform == "win32" else ""
    return dist / NAME / f"{NAME}{suffix}"


def build(dist: Path, work: Path) -> Path:
    """Run PyInstaller on the spec; returns the built executable."""
    try:
        import PyInstaller  # noqa: F401  (only to give a clear error when it is missing)
    except ImportError:
        raise InputError("PyInstaller is not installed; pip install 'enclave-codegen[installer]'") from None
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--clean",
            "--log-level",
            "WARN",
            "--distpath",
            str(dist),
            "--workpath",
            str(work),
            str(SPEC),
        ],
        check=False,
    )
    exe = executable(dist)
    if proc.returncode != 0 or not exe.is_file():
        raise InputError(f"PyInstaller failed (exit {proc.returncode}); see its output above")
    return exe


def self_test(exe: Path, *, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run the built client's ``--self-test`` offscreen (no display needed)."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run(
        [str(exe), "--self-test"], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m installers.desktop.build", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dist", type=Path, default=Path("dist"), help="output directory (default: dist)")
    parser.add_argument(
        "--work", type=Path, default=Path("build/pyinstaller"), help="PyInstaller's work directory"
    )
    parser.add_argument("--self-test", action="store_true", help="run the built client's self-test")
    args = parser.parse_args(argv)
    try:
        exe = build(args.dist.resolve(), args.work.resolve())
    except InputError as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return 1
    print(f"built {exe}")
    if args.self_test:
        result = self_test(exe)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        if result.returncode != 0:
            print(f"build: error: self-test failed (exit {result.returncode})", file=sys.stderr)
            return 1
        print("self-test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
