"""Installed model bundles of an appliance: ``<data>/models/<name>/<version>/`` and the active pointer.

    <data>/models/<name>/<version>/   a verified copy of a bundle (never modified after install)
    <data>/models/active.json         {"name", "version", "path"}: what ``serve`` loads; replaced
                                      atomically (write + rename), so a reader sees the old model
                                      or the new one, never a mix.

    <data>/models/<name>/.<version>.sealed.json
                                      the stamps (size, mtime, ctime, inode) of the copy's files when
                                      they were last hashed, and the manifest they were hashed against

Import checks the bundle's signature against the data directory's pinned keys, refuses a version not
newer than the newest installed one of the same name (rollback), copies it into a temporary directory
inside ``models/`` hashing every file as it goes (the bundle is read once), renames the copy into
place, seals it and then swaps the active pointer. ``open_installed`` — what ``serve`` loads with —
checks the signature and every file's size, and re-hashes only files whose stamp is not the sealed
one (then seals again), so a 150 GB model starts in seconds, not minutes, and a file changed on disk
is still caught. ``enclave model verify`` hashes everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConflictError, IntegrityError, ModelError, NotFoundError

from .bundle import Bundle, load_bundle
from .manifest import MANIFEST, Manifest, copy_verified, file_stamp
from .seal import check_not_rolled_back, mac, mac_ok, record_installed, seal_key
from .signing import trusted_keys

__all__ = [
    "ACTIVE",
    "InstalledModel",
    "active_bundle_path",
    "import_bundle",
    "is_sealed",
    "list_models",
    "open_installed",
]

ACTIVE = "active.json"


@dataclass(frozen=True)
class InstalledModel:
    name: str
    version: int
    path: Path
    active: bool


def _models_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "models"


def _read_active(models: Path) -> dict[str, object] | None:
    path = models / ACTIVE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"{path}: unreadable active-model pointer") from None
    return document if isinstance(document, dict) else None


def list_models(data_dir: Path | str) -> list[InstalledModel]:
    """Installed bundles, by name then version (not re-verified here; loading verifies)."""
    models = _models_dir(data_dir)
    if not models.is_dir():
        return []
    active = _read_active(models) or {}
    found: list[InstalledModel] = []
    for name_dir in sorted(p for p in models.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for version_dir in name_dir.iterdir():
            if version_dir.is_dir() and version_dir.name.isdigit():
                version = int(version_dir.name)
                is_active = active.get("name") == name_dir.name and active.get("version") == version
                found.append(InstalledModel(name_dir.name, version, version_dir, is_active))
    return sorted(found, key=lambda m: (m.name, m.version))


def active_bundle_path(data_dir: Path | str, name: str = "") -> Path:
    """The bundle to serve: the newest version of ``name`` if given, else the active one."""
    installed = list_models(data_dir)
    if name:
        matching = [m for m in installed if m.name == name]
        if not matching:
            raise NotFoundError(f"no installed model named {name!r}")
        return matching[-1].path
    for model in installed:
        if model.active:
            return model.path
    raise NotFoundError(f"no active model in {_models_dir(data_dir)}; run `enclave model import`")


def import_bundle(
    bundle_dir: Path | str, data_dir: Path | str, *, before_install: Callable[[Bundle], None] | None = None
) -> Bundle:
    """Verify, install and activate a bundle; returns the installed copy.

    ``before_install`` runs once the source's signature has verified and it has passed the rollback
    check, before anything is copied (the CLI records the installation in the database there, in a
    transaction that an exception from the copy — a file that does not match — rolls back).
    """
    keys = trusted_keys(data_dir)
    # The signature and the rollback check need only the signed manifest; the files are hashed
    # once, as they are copied.
    source = load_bundle(bundle_dir, trusted_keys=keys, check_files=False)
    models = _models_dir(data_dir)
    newest = max((m.version for m in list_models(data_dir) if m.name == source.name), default=None)
    if newest is not None and source.version < newest:
        raise IntegrityError(
            f"bundle {source.name} version {source.version} is older than installed version {newest}; "
            "rollback refused"
        )
    if newest is not None and source.version == newest:
        raise ConflictError(f"bundle {source.name} version {source.version} is already installed")
    if before_install is not None:
        before_install(source)
    target = models / source.name / str(source.version)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=models))
    except OSError as exc:
        raise ModelError(f"cannot install into {models}: {exc.strerror or exc}") from None
    try:
        staged = tmp / "bundle"
        try:
            copy_verified(source.path, staged, source.manifest)
        except OSError as exc:
            raise ModelError(f"cannot copy {bundle_dir} into {models}: {exc}") from None
        try:
            staged.rename(target)
        except OSError:
            # Another import of the same version won the race.
            raise ConflictError(
                f"bundle {source.name} version {source.version} is already installed"
            ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # Every byte of the copy was hashed as it was written: seal it as it now stands.
    _write_seal(target, source.manifest, {rel: file_stamp(target / rel) for rel in source.manifest.files})
    try:
        record_installed(Path(data_dir), source.name, source.version)
        _activate(models, source.name, source.version, target)
    except OSError as exc:
        raise ModelError(f"installed {target} but cannot make it active: {exc.strerror or exc}") from None
    return open_installed(target, data_dir)


def open_installed(path: Path | str, data_dir: Path | str) -> Bundle:
    """Load an installed bundle, re-hashing only the files changed since they were last hashed."""
    path = Path(path).resolve()
    sealed = _read_seal(path)
    bundle = load_bundle(path, trusted_keys=trusted_keys(data_dir), sealed=sealed)
    check_not_rolled_back(Path(data_dir), bundle.name, bundle.version)
    if bundle.manifest.stamps != sealed:
        _write_seal(path, bundle.manifest, bundle.manifest.stamps)
    return bundle


def is_sealed(path: Path | str) -> bool:
    """Whether every file of an installed bundle still has the stamp it had when last hashed (its
    next load will not read it). Stats only; the signature is not checked here."""
    path = Path(path)
    sealed = _read_seal(path)
    try:
        files = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["files"]
        return (
            bool(sealed)
            and set(sealed) == set(files)
            and all(file_stamp(path / rel) == stamp for rel, stamp in sealed.items())
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return False


def _seal_path(bundle_path: Path) -> Path:
    return bundle_path.parent / f".{bundle_path.name}.sealed.json"


def _read_seal(bundle_path: Path) -> dict[str, list[int]]:
    """The sealed stamps, or {} when there is no seal, it is unreadable, or the manifest changed."""
    try:
        document = json.loads(_seal_path(bundle_path).read_text(encoding="utf-8"))
        manifest = hashlib.sha256((bundle_path / MANIFEST).read_bytes()).hexdigest()
        stamps = document["stamps"]
        if document.get("manifest") != manifest or not isinstance(stamps, dict):
            return {}
        # A seal only the service could have written: stamps refreshed by hand over a changed
        # file would otherwise make the load skip hashing it.
        if not mac_ok(
            seal_key(_data_dir_of(bundle_path)),
            _sealed_document(bundle_path, manifest, stamps),
            document.get("mac"),
        ):
            return {}
        return {
            str(rel): list(stamp)
            for rel, stamp in stamps.items()
            if isinstance(stamp, list) and all(isinstance(v, int) for v in stamp)
        }
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return {}


def _data_dir_of(bundle_path: Path) -> Path:
    return bundle_path.parent.parent.parent  # <data>/models/<name>/<version>


def _sealed_document(bundle_path: Path, manifest_digest: str, stamps: object) -> dict[str, object]:
    # Bound to the bundle's place, so a seal cannot be carried over to another version.
    where = f"{bundle_path.parent.name}/{bundle_path.name}"
    return {"bundle": where, "manifest": manifest_digest, "stamps": stamps}


def _write_seal(bundle_path: Path, manifest: Manifest, stamps: dict[str, list[int]]) -> None:
    """Record ``stamps`` as hashed against ``manifest``; a data directory that cannot take the file
    only costs the next load a full hash."""
    seal = _seal_path(bundle_path)
    tmp = seal.with_name(seal.name + ".tmp")
    try:
        tag = mac(seal_key(_data_dir_of(bundle_path)), _sealed_document(bundle_path, manifest.digest, stamps))
        document = {"manifest": manifest.digest, "stamps": stamps, "mac": tag}
        tmp.write_text(json.dumps(document) + "\n", encoding="utf-8")
        os.replace(tmp, seal)
    except OSError:
        tmp.unlink(missing_ok=True)


def _activate(models: Path, name: str, version: int, path: Path) -> None:
    pointer = models / ACTIVE
    tmp = models / f".{ACTIVE}.tmp"
    tmp.write_text(json.dumps({"name": name, "version": version, "path": str(path)}) + "\n", encoding="utf-8")
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, pointer)
