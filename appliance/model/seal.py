"""What the appliance keeps about its installed models that someone able to write the data
directory must not be able to forge: a MAC key of the service's own (``<data>/keys/model_seal.key``,
0600 in the 0700 keys directory).

- A bundle's seal (the stamps its files had when last hashed, which let a load skip re-hashing) is
  MAC'ed with it: refreshed stamps over a changed weight no longer pass for a seal, so the weight is
  hashed and refused.
- The newest version ever installed of each name (``<data>/models/.installed.json``, MAC'ed too) is
  checked at every load: ``active.json`` pointed at an older version is a rollback, refused, even if
  the newer copy was deleted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from shared.errors import IntegrityError

__all__ = ["check_not_rolled_back", "mac", "mac_ok", "record_installed", "seal_key"]

KEY_FILE = "model_seal.key"
HIGH_WATER = ".installed.json"


def seal_key(data_dir: Path) -> bytes:
    """The service's model-seal key, created on first use."""
    keys = data_dir / "keys"
    path = keys / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()  # another process made it first
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return key


def mac(key: bytes, document: Any) -> str:
    body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hmac.new(key, b"enclave.model.seal.v1\x00" + body, hashlib.sha256).hexdigest()


def mac_ok(key: bytes, document: Any, tag: object) -> bool:
    return isinstance(tag, str) and hmac.compare_digest(mac(key, document), tag)


def _read_high_water(data_dir: Path) -> dict[str, int]:
    path = data_dir / "models" / HIGH_WATER
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(
            f"{path} is unreadable ({exc}); refusing to guess which versions were installed"
        ) from None
    versions = document.get("versions") if isinstance(document, dict) else None
    if not isinstance(versions, dict) or not mac_ok(seal_key(data_dir), versions, document.get("mac")):
        raise IntegrityError(f"{path} was not written by this appliance (its MAC does not verify)")
    return {str(k): int(v) for k, v in versions.items()}


def record_installed(data_dir: Path, name: str, version: int) -> None:
    versions = _read_high_water(data_dir)
    if versions.get(name, -1) >= version:
        return
    versions[name] = version
    path = data_dir / "models" / HIGH_WATER
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps({"versions": versions, "mac": mac(seal_key(data_dir), versions)}), encoding="utf-8"
    )
    os.replace(tmp, path)


def check_not_rolled_back(data_dir: Path, name: str, version: int) -> None:
    newest = _read_high_water(data_dir).get(name)
    if newest is not None and version < newest:
        raise IntegrityError(
            f"model {name} version {version} is older than version {newest}, installed before; "
            "rollback refused (active.json points at an older version)"
        )
