"""The ``enclave-desktop`` command. The desktop client's GUI stack is the ``[desktop]`` extra (a server
install has no Qt), so this checks for it before importing the client and says what to install."""

from __future__ import annotations

import importlib.util
import sys

# The [desktop] extra's import names, in the order a missing one is reported.
REQUIRED = ("PySide6", "keyring", "httpx", "pathspec")


def main() -> int:
    missing = [name for name in REQUIRED if _absent(name)]
    if missing:
        print(
            f"enclave-desktop: error: the desktop client needs {', '.join(missing)}; "
            "install it with: pip install 'enclave-codegen[desktop]'",
            file=sys.stderr,
        )
        return 1
    if "--version" not in sys.argv:
        from desktop.qt import binding_problem

        broken = binding_problem()
        if broken is not None:
            print(f"enclave-desktop: error: {broken}", file=sys.stderr)
            return 1
    if "--self-test" not in sys.argv and "--version" not in sys.argv:
        from desktop import syslibs

        problem = syslibs.xcb_report() if syslibs.uses_xcb() else None
        if problem is not None:
            # Qt would print a misleading hint and abort; this names the gap and the fix.
            print(f"enclave-desktop: error: {problem}", file=sys.stderr)
            return 1
    from desktop.app import main as run

    return run()


def _absent(name: str) -> bool:
    if sys.modules.get(name, False) is None:  # blocked, as tests and some packagers do
        return True
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True
