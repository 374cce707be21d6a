"""Audit key material in ``<data>/keys``.

    audit_signing.key   Ed25519 private key (PKCS#8 PEM), mode 0600 — signs checkpoints
    audit_signing.pub   its public half (SubjectPublicKeyInfo PEM), mode 0644 — give it to auditors
    audit_hmac.key      32 random bytes, mode 0600 — keys the content digests (capture mode digest)
    audit_master.key    32 random bytes, mode 0600 — wraps the per-record data keys (mode sealed)

Private files are created with ``O_EXCL`` and mode 0600 from the start (never chmod'ed after a
window of wider access) and refused on load if group or others can read them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance.config import Settings
from shared.errors import ConfigError, ConflictError, IntegrityError

__all__ = [
    "HMAC_KEY_FILE",
    "MASTER_KEY_FILE",
    "SIGNING_KEY_FILE",
    "SIGNING_PUB_FILE",
    "AuditKeys",
    "create_audit_keys",
    "key_id",
    "load_audit_keys",
    "load_public_key",
]

SIGNING_KEY_FILE = "audit_signing.key"
SIGNING_PUB_FILE = "audit_signing.pub"
HMAC_KEY_FILE = "audit_hmac.key"
MASTER_KEY_FILE = "audit_master.key"
_PRIVATE_FILES = (SIGNING_KEY_FILE, HMAC_KEY_FILE, MASTER_KEY_FILE)


def key_id(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, hex: names the key a checkpoint was signed with."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, kw_only=True)
class AuditKeys:
    """What the audit log needs. A verifier off the box has only ``public_key``."""

    public_key: Ed25519PublicKey
    signing_key: Ed25519PrivateKey | None = None
    hmac_key: bytes | None = None
    master_key: bytes | None = None

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    @property
    def master_key_id(self) -> str:
        if self.master_key is None:
            raise ConfigError("no audit master key loaded")
        return hashlib.sha256(b"enclave.audit.master-key-id\x00" + self.master_key).hexdigest()

    def sign(self, message: bytes) -> bytes:
        if self.signing_key is None:
            raise ConfigError("no audit signing key loaded: cannot sign checkpoints")
        return self.signing_key.sign(message)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def generate(cls) -> AuditKeys:
        """Fresh keys held in memory only (tests and benchmarks)."""
        signing = Ed25519PrivateKey.generate()
        return cls(
            public_key=signing.public_key(),
            signing_key=signing,
            hmac_key=secrets.token_bytes(32),
            master_key=secrets.token_bytes(32),
        )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def create_audit_keys(keys_dir: Path) -> AuditKeys:
    """Create every audit key file in ``keys_dir``; refuses to overwrite an existing one."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = [n for n in (*_PRIVATE_FILES, SIGNING_PUB_FILE) if (keys_dir / n).exists()]
    if existing:
        raise ConflictError(f"audit keys already exist in {keys_dir}: {', '.join(existing)}")
    keys = AuditKeys.generate()
    assert keys.signing_key is not None and keys.hmac_key is not None and keys.master_key is not None
    private_pem = keys.signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = keys.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(keys_dir / SIGNING_KEY_FILE, private_pem, 0o600)
    _write_new(keys_dir / HMAC_KEY_FILE, keys.hmac_key, 0o600)
    _write_new(keys_dir / MASTER_KEY_FILE, keys.master_key, 0o600)
    _write_new(keys_dir / SIGNING_PUB_FILE, public_pem, 0o644)
    return keys


def _read_private(path: Path) -> bytes:
    try:
        if os.name == "posix" and path.stat().st_mode & 0o077:
            raise ConfigError(f"{path}: private audit key is readable by others; chmod 600 it")
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: audit key missing (run `enclave init`)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read audit key: {exc.strerror}") from None


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an exported ``audit_signing.pub`` (what an auditor off the box holds)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read public key: {exc.strerror}") from None
    except ValueError:
        raise IntegrityError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise IntegrityError(f"{path}: not an Ed25519 public key")
    return key


def load_audit_keys(where: Settings | Path) -> AuditKeys:
    """Load the keys ``create_audit_keys`` made, from ``settings.keys_dir`` or a keys directory."""
    keys_dir = where.keys_dir if isinstance(where, Settings) else Path(where)
    try:
        signing = serialization.load_pem_private_key(_read_private(keys_dir / SIGNING_KEY_FILE), None)
    except ValueError:
        raise ConfigError(f"{keys_dir / SIGNING_KEY_FILE}: not a PEM private key") from None
    if not isinstance(signing, Ed25519PrivateKey):
        raise ConfigError(f"{keys_dir / SIGNING_KEY_FILE}: not an Ed25519 key")
    hmac_key = _read_private(keys_dir / HMAC_KEY_FILE)
    master_key = _read_private(keys_dir / MASTER_KEY_FILE)
    for name, value in ((HMAC_KEY_FILE, hmac_key), (MASTER_KEY_FILE, master_key)):
        if len(value) != 32:
            raise ConfigError(f"{keys_dir / name}: expected 32 bytes, found {len(value)}")
    public = signing.public_key()
    pub_path = keys_dir / SIGNING_PUB_FILE
    if pub_path.exists() and key_id(load_public_key(pub_path)) != key_id(public):
        raise ConfigError(f"{pub_path}: does not match {SIGNING_KEY_FILE}")
    return AuditKeys(public_key=public, signing_key=signing, hmac_key=hmac_key, master_key=master_key)
