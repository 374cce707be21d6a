"""Entry script PyInstaller freezes: the same ``desktop.app:main`` as the ``enclave-desktop`` command."""

from __future__ import annotations

import sys

from desktop.app import main

if __name__ == "__main__":
    sys.exit(main())
