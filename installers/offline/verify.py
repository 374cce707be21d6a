"""Verify an offline bundle against a pinned signer, and decide whether it may replace an install."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from installers.offline.manifest import (
    PUBLIC_KEY,
    SIGNATURE,
    Manifest,
    check_files,
    check_upgrade,
    fingerprint,
    load_public_key,
    parse_manifest,
    read_manifest,
)
from shared.errors import InputError, IntegrityError

__all__ = ["Verified", "normalize_fingerprint", "verify_bundle"]


@dataclass(frozen=True, kw_only=True)
class Verified:
    manifest: Manifest
    signer: str  # fingerprint of the key the signature verified against
    pinned: bool  # False when only the bundle's own copy of the key was available
    upgrade: bool  # False when this exact build is already the installed one


def normalize_fingerprint(text: str) -> str:
    fp = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        raise InputError(f"a key fingerprint is 64 hex digits, got {text!r}")
    return fp


def verify_bundle(
    root: Path,
    *,
    key: Path | None = None,
    expected_fingerprint: str | None = None,
    installed_manifest: Path | None = None,
) -> Verified:
    """Check the signature and every file of the bundle at ``root``; raise IntegrityError on the first fault.

    The signer is trusted when it is ``key`` (a PEM public key the site pinned) or matches
    ``expected_fingerprint``; with neither, the bundle's own key is used and the result says
    ``pinned=False`` — that proves integrity, not origin. ``installed_manifest`` (the manifest the
    installed bundle came with) makes an older version, or a different build of the installed
    version, an error.
    """
    from cryptography.exceptions import InvalidSignature

    manifest, data = read_manifest(root)
    embedded_path = root / PUBLIC_KEY
    if key is not None:
        public = load_public_key(key)
    elif embedded_path.is_file():
        public = load_public_key(embedded_path)
    else:
        raise IntegrityError(f"{root}: the signer's key {PUBLIC_KEY} is missing")
    signer = fingerprint(public)
    if expected_fingerprint is not None:
        want = normalize_fingerprint(expected_fingerprint)
        if signer != want:
            raise IntegrityError(f"bundle is signed by key {signer}, not the expected {want}")
    try:
        signature = (root / SIGNATURE).read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"{root}: {SIGNATURE} is missing; the bundle is unsigned") from None
    try:
        public.verify(signature, data)
    except InvalidSignature:
        raise IntegrityError(
            f"manifest signature does not verify against key {signer} (manifest altered or signed by another key)"
        ) from None
    check_files(root, manifest)
    installed = None
    if installed_manifest is not None:
        try:
            data_installed = installed_manifest.read_bytes()
        except OSError as exc:
            raise IntegrityError(
                f"{installed_manifest}: cannot read the installed manifest: {exc.strerror}"
            ) from None
        installed = parse_manifest(data_installed, str(installed_manifest))
    upgrade = check_upgrade(manifest, installed)
    return Verified(
        manifest=manifest,
        signer=signer,
        pinned=key is not None or expected_fingerprint is not None,
        upgrade=upgrade,
    )
