"""The signed manifest of a bundle directory: every file's sha256 and size, Ed25519-signed.

    manifest.json  {"format": "enclave-model-manifest", "format_version": 1, "name", "version",
                    "files": {"<relative path>": {"sha256": hex, "size": bytes}, ...}}
    manifest.sig   {"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64>"} over the
                   exact bytes of manifest.json.

Verification fails closed: no trusted keys, no signature, an unknown key, a bad signature, a file
that is missing, extra, a symlink, or whose digest or size differs — each an IntegrityError saying
which. The bundle's name and version live in the signed manifest, so they cannot be edited to dodge
the rollback check.

Hashing a real bundle (~150 GB) takes minutes, so it is done once per copy of the bytes, not on every
load: ``copy_verified`` hashes files as it copies them (import reads a bundle once), and
``verify_manifest(..., sealed=stamps)`` skips the digest of a file whose stamp — size, mtime, ctime,
inode, device — is the one recorded when it was last hashed (the store keeps those seals). ctime
cannot be set back by a user process, so rewriting a file and restoring its mtime still changes its
stamp and brings the full check back. ``enclave model verify`` always hashes everything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.errors import InputError, IntegrityError

from .signing import key_id

__all__ = [
    "MANIFEST",
    "SIGNATURE",
    "Manifest",
    "copy_verified",
    "file_stamp",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
]

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
_FORMAT = "enclave-model-manifest"
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Manifest:
    name: str
    version: int
    files: dict[str, dict[str, Any]]
    key_id: str
    #: sha256 of manifest.json's exact bytes, the ones the signature covers: the bundle's identity.
    digest: str
    #: Each file's ``file_stamp`` as taken just before it was checked (verify_manifest fills it).
    stamps: dict[str, list[int]] = field(default_factory=dict, compare=False)


def file_stamp(path: Path) -> list[int]:
    """What changes when a file's bytes may have: [size, mtime_ns, ctime_ns, inode, device]."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _bundle_files(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise IntegrityError(f"bundle contains a symlink: {rel}")
        if path.is_file() and rel not in (MANIFEST, SIGNATURE):
            found[rel] = path
    return found


# A bundle's name and version become directory names (<data>/models/<name>/<version>/): they must be
# identifiers, never paths. A signature only says who made the bundle, not that its name is safe
# ("../../ESCAPED", signed by a trusted key, installed outside the data directory).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_VERSION = 2**63 - 1


def identity_problem(name: object, version: object) -> str | None:
    """Why ``name``/``version`` cannot name an installed bundle, or None if they can."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        return f"bundle name {name!r} is not an identifier (letters, digits, '.', '_', '-'; at most 128)"
    if type(version) is not int or not 0 <= version <= _MAX_VERSION:
        return f"bundle version {version!r} is not a non-negative integer"
    return None


def write_manifest(
    root: Path, key: Ed25519PrivateKey, *, name: str, version: int, known: Mapping[str, str] | None = None
) -> Manifest:
    """Hash every file under ``root`` and write manifest.json and manifest.sig.

    ``known`` maps files the caller hashed while writing them to their sha256 (not read again).
    """
    problem = identity_problem(name, version)
    if problem is not None:
        raise InputError(problem)
    known = known or {}
    files = {
        rel: {"sha256": known.get(rel) or sha256_file(path), "size": path.stat().st_size}
        for rel, path in _bundle_files(root).items()
    }
    document = {"format": _FORMAT, "format_version": 1, "name": name, "version": version, "files": files}
    raw = json.dumps(document, indent=1, sort_keys=True).encode("utf-8")
    (root / MANIFEST).write_bytes(raw)
    kid = key_id(key.public_key())
    signature = {"algorithm": "ed25519", "key_id": kid, "signature": base64.b64encode(key.sign(raw)).decode()}
    (root / SIGNATURE).write_text(json.dumps(signature, indent=1) + "\n")
    return Manifest(name, version, files, kid, hashlib.sha256(raw).hexdigest())


def _read_signature(root: Path) -> tuple[str, bytes]:
    path = root / SIGNATURE
    if not path.is_file():
        raise IntegrityError(f"{root.name}: bundle is unsigned (no {SIGNATURE})")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("algorithm") != "ed25519":
            raise ValueError
        return str(document["key_id"]), base64.b64decode(document["signature"], validate=True)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise IntegrityError(f"{root.name}: {SIGNATURE} is malformed") from None


def verify_manifest(
    root: Path | str,
    trusted: Sequence[Ed25519PublicKey],
    *,
    check_files: bool = True,
    sealed: Mapping[str, Sequence[int]] | None = None,
) -> Manifest:
    """Verify signature, then every file; return the manifest. Raises IntegrityError saying why not.

    ``sealed`` maps files to the stamp they had when last hashed: a file whose stamp is unchanged
    has its size checked but is not read again. ``check_files=False`` checks the signature only.
    """
    root = Path(root)
    if not trusted:
        raise IntegrityError("no trusted model-signing keys are pinned; refusing to load any bundle")
    if not root.is_dir():
        raise IntegrityError(f"{root}: not a bundle directory")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise IntegrityError(f"{root.name}: no {MANIFEST}")
    kid, signature = _read_signature(root)
    raw = manifest_path.read_bytes()
    keys = {key_id(k): k for k in trusted}
    if kid not in keys:
        raise IntegrityError(f"{root.name}: signed by key {kid}, which is not a trusted model-signing key")
    try:
        keys[kid].verify(signature, raw)
    except InvalidSignature:
        raise IntegrityError(
            f"{root.name}: manifest signature does not verify (manifest modified?)"
        ) from None
    try:
        document = json.loads(raw)
        name, version, files = document["name"], document["version"], document["files"]
        if document.get("format") != _FORMAT or not isinstance(files, dict) or not isinstance(version, int):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"{root.name}: {MANIFEST} is malformed") from None
    problem = identity_problem(name, version)
    if problem is not None:
        raise IntegrityError(f"{root.name}: {problem}")
    stamps: dict[str, list[int]] = {}
    if check_files:
        actual = _matching_files(root, files)
        sealed = sealed or {}
        for rel, entry in files.items():
            path = actual[rel]
            stamps[rel] = stamp = file_stamp(path)
            if stamp[0] != entry.get("size") or (
                list(sealed.get(rel, ())) != stamp and sha256_file(path) != entry.get("sha256")
            ):
                raise IntegrityError(f"{root.name}: file {rel} does not match its manifest digest")
    return Manifest(name, version, files, kid, hashlib.sha256(raw).hexdigest(), stamps)


def _matching_files(root: Path, files: Mapping[str, Any]) -> dict[str, Path]:
    """The bundle's files, which must be exactly the manifest's (no symlinks)."""
    actual = _bundle_files(root)
    for rel in sorted(set(actual) - set(files)):
        raise IntegrityError(f"{root.name}: unexpected file {rel} (not in the manifest)")
    for rel in sorted(set(files) - set(actual)):
        raise IntegrityError(f"{root.name}: missing file {rel}")
    return actual


def copy_verified(source: Path, target: Path, manifest: Manifest) -> None:
    """Copy a bundle whose signature ``manifest`` came from, checking every file's digest as it is
    copied: the copy holds exactly the signed bytes, read once. ``target`` must not exist.
    IntegrityError as verify_manifest words it when a file differs."""
    actual = _matching_files(source, manifest.files)
    target.mkdir()
    for rel in (MANIFEST, SIGNATURE, *sorted(manifest.files)):
        src, dst = (source / rel, target / rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        with (actual.get(rel) or src).open("rb") as fin, dst.open("xb") as fout:
            while chunk := fin.read(_CHUNK):
                digest.update(chunk)
                fout.write(chunk)
                size += len(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        entry = manifest.files.get(rel)
        if rel == MANIFEST and digest.hexdigest() != manifest.digest:
            raise IntegrityError(f"{source.name}: {MANIFEST} changed after it was verified")
        if entry is not None and (size != entry.get("size") or digest.hexdigest() != entry.get("sha256")):
            raise IntegrityError(f"{source.name}: file {rel} does not match its manifest digest")
