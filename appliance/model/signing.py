"""Ed25519 keys for model bundles: the builder's signing key and the appliance's pinned trust store.

    signing key   a PEM PKCS#8 private key. ``enclave model build`` uses ``--signing-key FILE`` or,
                  by default, the per-user key at ``default_signing_key_path()``:
                  ``$ENCLAVE_MODEL_SIGNING_KEY`` if set, else
                  ``<platformdirs user_config_dir>/enclave/model-signing-key.pem``
                  (``~/.config/enclave/model-signing-key.pem`` on Linux), created (mode 0600) on
                  first use.
    trust store   ``<data>/keys/trusted_models/*.pub``, PEM public keys. ``enclave init`` pins the
                  local signing key there; an appliance loads and imports only bundles whose
                  manifest verifies against one of them. An empty store trusts nothing.

A key is named by its id: the first 16 hex digits of the SHA-256 of its raw 32-byte public key.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.errors import ConfigError, IntegrityError, ModelError

if TYPE_CHECKING:
    from appliance.config import Settings

__all__ = [
    "TRUST_DIR",
    "default_signing_key",
    "default_signing_key_path",
    "init_model_trust",
    "key_id",
    "load_private_key",
    "load_public_key",
    "pin_public_key",
    "public_pem",
    "trusted_keys",
]

TRUST_DIR = Path("keys") / "trusted_models"


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def default_signing_key_path() -> Path:
    env = os.environ.get("ENCLAVE_MODEL_SIGNING_KEY")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_config_dir("enclave", appauthor=False)) / "model-signing-key.pem"


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"signing key {path}: cannot read: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ModelError(f"signing key {path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ModelError(f"signing key {path}: not an Ed25519 key")
    return key


def default_signing_key(path: Path | None = None) -> Ed25519PrivateKey:
    """The per-user signing key, created on first use."""
    path = path or default_signing_key_path()
    if path.exists():
        return load_private_key(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        # Two builds racing to create the key: the first rename wins and both then use its key.
        if path.exists():
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot create model signing key {path}: {exc.strerror or exc}") from None
    return load_private_key(path)


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IntegrityError(f"public key {path}: cannot read: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise IntegrityError(f"public key {path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise IntegrityError(f"public key {path}: not an Ed25519 key")
    return key


def trusted_keys(data_dir: Path | str) -> list[Ed25519PublicKey]:
    """The pinned model-signing keys of a data directory (possibly none)."""
    directory = Path(data_dir) / TRUST_DIR
    if not directory.is_dir():
        return []
    return [load_public_key(p) for p in sorted(directory.glob("*.pub"))]


def pin_public_key(data_dir: Path | str, key: Ed25519PublicKey, name: str) -> Path:
    """Trust ``key`` for bundles in ``data_dir`` (idempotent: a key already pinned is not duplicated)."""
    directory = Path(data_dir) / TRUST_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for existing in directory.glob("*.pub"):
        if key_id(load_public_key(existing)) == key_id(key):
            return existing
    path = directory / f"{name}.pub"
    if path.exists():
        path = directory / f"{name}-{key_id(key)}.pub"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(public_pem(key))
    os.replace(tmp, path)
    return path


def init_model_trust(settings: Settings) -> None:
    """``enclave init`` step: the data directory's model trust store, with this user's signing key
    pinned (created on first use), so bundles built here with ``enclave model build`` import as they are."""
    (settings.data_dir / TRUST_DIR).mkdir(parents=True, exist_ok=True)
    try:
        key = default_signing_key()
    except ConfigError as exc:
        # No writable per-user config (a locked-down service account): the appliance still works
        # with keys pinned later by `enclave model trust`.
        print(f"model signing key not pinned: {exc}")
        return
    pin_public_key(settings.data_dir, key.public_key(), "local-builder")
