"""``python -m installers.offline.precheck BUNDLE [FINGERPRINT]``: file checks, standard library only.

``install.sh`` runs this with the system Python straight from the bundle's own wheel (a wheel is a
zip file, so it can sit on ``PYTHONPATH``) before pip reads any wheel: a changed, missing or extra
file is refused with its name, and so is a bundle whose signer's key is not the expected one
(``FINGERPRINT``) — before minutes go into installing it. The signature is checked afterwards by ``enclave bundle verify``,
once ``cryptography`` is installed, and before the new release is activated.
"""

from __future__ import annotations

import sys
from pathlib import Path

from installers.offline.manifest import PUBLIC_KEY, check_files, pem_fingerprint, read_manifest
from shared.errors import EnclaveError, IntegrityError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m installers.offline.precheck BUNDLE [FINGERPRINT]", file=sys.stderr)
        return 2
    root = Path(args[0])
    try:
        manifest, _ = read_manifest(root)
        check_files(root, manifest)
        if len(args) == 2:
            want = args[1].strip().lower().removeprefix("sha256:").replace(":", "")
            signer = pem_fingerprint((root / PUBLIC_KEY).read_bytes())
            if signer != want:
                raise IntegrityError(f"bundle is signed by key {signer}, not the expected {want}")
    except EnclaveError as exc:
        print(f"precheck: error: {exc}", file=sys.stderr)
        return 1
    print(f"precheck: {len(manifest.files)} files match the manifest of bundle {manifest.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
