"""The offline appliance bundle: build it, verify it, install it without a network.

Public surface: :func:`build_bundle` (``enclave bundle build``), :func:`verify_bundle`
(``enclave bundle verify``), and the manifest primitives in :mod:`installers.offline.manifest`.
This package imports only the standard library at import time: ``install.sh`` runs
:mod:`installers.offline.precheck` with the system Python before anything is installed.
"""

from __future__ import annotations

__all__: list[str] = []
