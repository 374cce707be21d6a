"""The signed manifest of an offline bundle: what is in it, and proof of who built it.

A bundle is a directory. ``manifest.json`` lists every other file in it (POSIX relative path ->
sha256 + size) with the bundle's metadata; ``manifest.sig`` is an Ed25519 signature over the exact
bytes of ``manifest.json``; ``signing-key.pub`` is the signer's public key (PEM) for convenience —
trust comes from a key or fingerprint the site pinned, never from the copy inside the bundle.

Verification fails closed and names the first reason it found:

    manifest missing / unreadable / wrong format      -> IntegrityError
    signer is not the pinned key (fingerprint)        -> IntegrityError
    signature does not verify                         -> IntegrityError
    a listed file is missing, changed or resized      -> IntegrityError
    a file is present that the manifest does not list -> IntegrityError
    version older than (or a rebuild of) the installed -> IntegrityError

The file checks (:func:`check_files`) use the standard library only: ``install.sh`` runs them with
the system Python straight from the bundle's own wheel before anything is installed. Only the
signature needs ``cryptography``, imported where it is used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from shared.errors import InputError, IntegrityError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "FORMAT",
    "MANIFEST",
    "PUBLIC_KEY",
    "SIGNATURE",
    "Manifest",
    "bundle_id",
    "check_files",
    "check_upgrade",
    "fingerprint",
    "generate_signing_key",
    "load_private_key",
    "load_public_key",
    "parse_manifest",
    "pem_fingerprint",
    "read_manifest",
    "version_key",
    "write_manifest",
]

FORMAT = "enclave-offline-bundle/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "signing-key.pub"
# The two files the manifest cannot list: itself and its signature.
_UNLISTED = frozenset({MANIFEST, SIGNATURE})
_VERSION_RE = re.compile(r"^\d+(\.\d+)*$")
_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class Manifest:
    version: str
    created: str
    python: str
    platforms: tuple[str, ...]
    gpu: bool
    package: str
    models: tuple[str, ...]
    files: Mapping[str, tuple[str, int]]  # path -> (sha256 hex, size)
    id: str  # sha256 of the manifest's bytes: names this exact build


def version_key(version: str) -> tuple[int, ...]:
    """``"0.1.10"`` -> ``(0, 1, 10)``; bundle versions are dotted numbers so they order plainly."""
    if not _VERSION_RE.match(version):
        raise InputError(f"bundle version must be dotted numbers like 1.2.3, got {version!r}")
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()  # 1.2 == 1.2.0
    return tuple(parts)


def bundle_id(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _walk(root: Path) -> Iterable[str]:
    """Every entry under ``root`` as a POSIX relative path; links and odd files are refused."""
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in sorted(dirnames):
            if (base / name).is_symlink():
                raise IntegrityError(f"bundle contains a symbolic link: {_rel(root, base / name)}")
        for name in sorted(filenames):
            path = base / name
            if path.is_symlink():
                raise IntegrityError(f"bundle contains a symbolic link: {_rel(root, path)}")
            if not path.is_file():
                raise IntegrityError(
                    f"bundle contains something that is not a plain file: {_rel(root, path)}"
                )
            yield _rel(root, path)


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _safe_path(rel: str) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or not p.parts or ".." in p.parts or rel != p.as_posix():
        raise IntegrityError(f"manifest lists an unsafe path: {rel!r}")
    return rel


def write_manifest(
    root: Path,
    private_key: Ed25519PrivateKey,
    *,
    version: str,
    created: str,
    python: str,
    platforms: Iterable[str],
    gpu: bool,
    package: str,
    models: Iterable[str],
) -> Manifest:
    """Hash every file under ``root`` (writing ``signing-key.pub`` first), then write and sign the manifest."""
    from cryptography.hazmat.primitives import serialization

    version_key(version)
    for stale in _UNLISTED:
        (root / stale).unlink(missing_ok=True)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (root / PUBLIC_KEY).write_bytes(public_pem)
    files = {rel: _digest(root / rel) for rel in sorted(_walk(root))}
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": version,
        "created": created,
        "python": python,
        "platforms": list(platforms),
        "gpu": gpu,
        "package": package,
        "models": sorted(models),
        "files": {rel: {"sha256": sha, "size": size} for rel, (sha, size) in files.items()},
    }
    data = (json.dumps(document, indent=1, sort_keys=True) + "\n").encode("utf-8")
    (root / MANIFEST).write_bytes(data)
    (root / SIGNATURE).write_bytes(private_key.sign(data))
    return parse_manifest(data, str(root / MANIFEST))


def parse_manifest(data: bytes, where: str) -> Manifest:
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise IntegrityError(f"{where}: not an Enclave offline bundle manifest (format {FORMAT})")
        files: dict[str, tuple[str, int]] = {}
        for rel, entry in doc["files"].items():
            sha, size = entry["sha256"], entry["size"]
            if not (isinstance(sha, str) and len(sha) == 64 and isinstance(size, int) and size >= 0):
                raise IntegrityError(f"{where}: bad entry for {rel!r}")
            files[_safe_path(rel)] = (sha, size)
        version = str(doc["version"])
        version_key(version)
        return Manifest(
            version=version,
            created=str(doc["created"]),
            python=str(doc["python"]),
            platforms=tuple(str(p) for p in doc["platforms"]),
            gpu=bool(doc["gpu"]),
            package=str(doc["package"]),
            models=tuple(str(m) for m in doc["models"]),
            files=files,
            id=bundle_id(data),
        )
    except (ValueError, KeyError, TypeError, AttributeError, InputError) as exc:
        if isinstance(exc, IntegrityError):
            raise
        raise IntegrityError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None


def read_manifest(root: Path) -> tuple[Manifest, bytes]:
    """Parse ``root/manifest.json`` (no checks beyond its shape); returns it and its raw bytes."""
    path = root / MANIFEST
    if not root.is_dir():
        raise IntegrityError(f"{root} is not a directory")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"{root}: not an Enclave offline bundle ({MANIFEST} is missing)") from None
    except OSError as exc:
        raise IntegrityError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_manifest(data, str(path)), data


def check_files(root: Path, manifest: Manifest) -> None:
    """Every listed file present with its size and sha256; nothing unlisted. Standard library only."""
    present = set(_walk(root)) - _UNLISTED
    listed = set(manifest.files)
    missing = sorted(listed - present)
    if missing:
        raise IntegrityError(f"file listed in the manifest is missing: {missing[0]}")
    extra = sorted(present - listed)
    if extra:
        raise IntegrityError(f"file not listed in the manifest: {extra[0]}")
    for rel in sorted(listed):
        want_sha, want_size = manifest.files[rel]
        path = root / rel
        if path.stat().st_size != want_size:
            raise IntegrityError(
                f"file changed: {rel} (size {path.stat().st_size}, manifest says {want_size})"
            )
        if _digest(path)[0] != want_sha:
            raise IntegrityError(f"file changed: {rel} (sha256 does not match the manifest)")


# DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32-byte raw key follows it.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def pem_fingerprint(pem: bytes) -> str:
    """:func:`fingerprint` of a PEM Ed25519 public key, with the standard library only (for precheck)."""
    lines = pem.decode("ascii", "replace").strip().splitlines()
    if len(lines) < 3 or lines[0] != "-----BEGIN PUBLIC KEY-----" or lines[-1] != "-----END PUBLIC KEY-----":
        raise IntegrityError("the signer's key is not a PEM public key")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:
        raise IntegrityError("the signer's key is not a PEM public key") from None
    if len(der) != len(_ED25519_SPKI_PREFIX) + 32 or not der.startswith(_ED25519_SPKI_PREFIX):
        raise IntegrityError("the signer's key is not an Ed25519 public key")
    return hashlib.sha256(der[len(_ED25519_SPKI_PREFIX) :]).hexdigest()


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: what a site pins and an operator compares."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise IntegrityError(f"public key {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise IntegrityError(f"{path}: not an Ed25519 public key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise InputError(f"signing key {path} does not exist") from None
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path}: not an Ed25519 private key")
    return key


def generate_signing_key(path: Path) -> Ed25519PrivateKey:
    """Create a new Ed25519 key at ``path`` (PEM, mode 0600); refuses to overwrite one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"signing key {path} already exists; pass it with --signing-key") from None
    except OSError as exc:
        raise InputError(f"cannot write signing key {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def check_upgrade(new: Manifest, installed: Manifest | None) -> bool:
    """Whether ``new`` may replace ``installed``; False when it is the very same build (nothing to do).

    An older version is refused, and so is a different build claiming the installed version: a site
    never goes back, and one version number names one set of files.
    """
    if installed is None:
        return True
    if new.id == installed.id:
        return False
    new_key, old_key = version_key(new.version), version_key(installed.version)
    if new_key < old_key:
        raise IntegrityError(f"bundle version {new.version} is older than the installed {installed.version}")
    if new_key == old_key:
        raise IntegrityError(
            f"bundle version {new.version} is already installed from a different build; "
            "a newer bundle needs a newer version"
        )
    return True
