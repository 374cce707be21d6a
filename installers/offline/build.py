"""Build an offline appliance bundle: wheels, model bundles, install script, service files, signed manifest.

Layout of the directory it writes::

    OUT/
      manifest.json  manifest.sig  signing-key.pub     what is here, signed (see manifest.py)
      install.sh                                       installs or upgrades from this directory alone
      README.txt                                       the operator's steps
      wheels/*.whl                                     the appliance and every runtime dependency
      models/<name>/...                                model bundles, as `enclave model build` wrote them
      model-keys/<key id>.pub                          public keys that signed them (the site pins them)
      systemd/enclave.service                          hardened unit (install.sh fills in the paths)
      nginx/enclave.conf                               sample: several replicas sharing PostgreSQL

The bundle is assembled in a sibling temporary directory and renamed into place at the end, so a
failed build never leaves a half-written ``OUT``.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.resources
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from installers.offline.manifest import (
    Manifest,
    fingerprint,
    generate_signing_key,
    load_private_key,
    version_key,
    write_manifest,
)
from shared.errors import EnclaveError, InputError, IntegrityError

__all__ = ["PROJECT", "TEST_ONLY", "Built", "build_bundle"]

PROJECT = "enclave-codegen"
# Never shipped to a site: the product does not import them (tests use them as ground truth).
TEST_ONLY = frozenset({"torch", "transformers", "pytest", "hypothesis", "schemathesis"})
_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-")


@dataclass(frozen=True, kw_only=True)
class Built:
    path: Path
    manifest: Manifest
    signer: str  # fingerprint of the signing key
    new_key: Path | None  # where a freshly generated signing key was written, if one was


def _resource(name: str) -> str:
    return importlib.resources.files("installers.offline").joinpath(name).read_text(encoding="utf-8")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _run_pip(args: Sequence[str], what: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        raise InputError(f"{what} failed: {tail[0]}")


def _wheel_id(path: Path) -> tuple[str, str]:
    """(normalized project name, version) from a wheel's file name."""
    match = _WHEEL_RE.match(path.name)
    if match is None:
        raise InputError(f"{path.name} is not a wheel file name")
    return _normalize(match["name"]), match["version"]


def _source_tree() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def _project_wheel(wheels: Path, *, source: Path | None, wheel: Path | None) -> tuple[Path, str]:
    if wheel is not None:
        if not wheel.is_file() or not wheel.name.endswith(".whl"):
            raise InputError(f"{wheel} is not a wheel file")
        shutil.copy2(wheel, wheels / wheel.name)
    else:
        src = source or _source_tree()
        if src is None or not (src / "pyproject.toml").is_file():
            raise InputError(
                "no source tree to build the appliance wheel from; pass --source DIR or --wheel FILE"
            )
        _run_pip(["wheel", "--no-deps", "--wheel-dir", str(wheels), str(src)], f"building the wheel of {src}")
    found = [p for p in wheels.glob("*.whl") if _wheel_id(p)[0] == PROJECT]
    if len(found) != 1:
        raise InputError(f"expected one {PROJECT} wheel, found {len(found)}")
    version = _wheel_id(found[0])[1]
    version_key(version)
    return found[0], version


def _installed_pins(directory: Path) -> Path:
    """A constraints file pinning every distribution installed here: ship what the tests ran against."""
    lines = sorted(
        {
            f"{_normalize(d.metadata['Name'])}=={d.version}"
            for d in importlib.metadata.distributions()
            if d.metadata["Name"] and _normalize(d.metadata["Name"]) != PROJECT
        }
    )
    path = directory / "pins.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _collect_dependencies(
    wheels: Path,
    *,
    version: str,
    gpu: bool,
    platforms: Sequence[str],
    python_version: str,
    pins: Path | None,
) -> None:
    target = f"{PROJECT}[gpu]=={version}" if gpu else f"{PROJECT}=={version}"
    args = ["download", "--dest", str(wheels), "--find-links", str(wheels), "--only-binary=:all:"]
    for platform in platforms:
        args += ["--platform", platform]
    if platforms or python_version != _host_python():
        args += ["--python-version", python_version, "--implementation", "cp"]
    if pins is not None:
        args += ["--constraint", str(pins)]
    # pip itself too: install.sh upgrades the new environment's pip from the bundle before the rest.
    _run_pip([*args, target, "pip"], "collecting the runtime wheels (pip download)")
    shipped = {_wheel_id(p)[0] for p in wheels.glob("*.whl")}
    leaked = sorted(shipped & TEST_ONLY)
    if leaked:
        raise InputError(
            f"test-only packages would be shipped: {', '.join(leaked)}; check the dependency list"
        )


def _host_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _model_dir_name(model: Path) -> str:
    """``<name>-<version>`` from the model's signed manifest; the directory's own name otherwise."""
    try:
        doc = json.loads((model / "manifest.json").read_text(encoding="utf-8"))
        return f"{doc['name']}-{doc['version']}"
    except (OSError, ValueError, KeyError, TypeError):
        return model.resolve().name


def _check_models(models: Sequence[Path]) -> None:
    names: set[str] = set()
    for model in models:
        if not model.is_dir() or not (model / "bundle.json").is_file():
            raise InputError(
                f"{model} is not a model bundle (no bundle.json); build one with `enclave model build`"
            )
        name = _model_dir_name(model)
        if name in names:
            raise InputError(f"model bundle {name} is given twice")
        names.add(name)


def _model_keys(models: Sequence[Path], candidates: Sequence[Path]) -> dict[str, bytes]:
    """The public keys that signed ``models``, by key id: the site must trust them to import.

    Candidates are the ``--model-key`` files (public or private PEM) and this machine's default
    model signing key; every model's signer must be among them. The offline bundle's own signature
    then vouches for these keys on the site.
    """
    from appliance.model import signing

    known: dict[str, bytes] = {}
    paths = list(candidates)
    default = signing.default_signing_key_path()
    if default.is_file():
        paths.append(default)
    for path in paths:
        try:
            public = signing.load_public_key(path)
        except IntegrityError:
            try:
                public = signing.load_private_key(path).public_key()
            except EnclaveError:
                raise InputError(f"--model-key {path}: not an Ed25519 PEM key") from None
        known[signing.key_id(public)] = signing.public_pem(public)
    needed: dict[str, bytes] = {}
    for model in models:
        try:
            signer = json.loads((model / "manifest.sig").read_text(encoding="utf-8"))["key_id"]
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"model bundle {model} has no readable manifest.sig; is it signed?") from None
        if signer not in known:
            raise InputError(
                f"model bundle {model} is signed by key {signer}; pass its public key with --model-key"
            )
        needed[signer] = known[signer]
    return needed


def _copy_models(models: Sequence[Path], dest: Path) -> list[str]:
    names: list[str] = []
    for model in models:
        name = _model_dir_name(model)
        # symlinks=False: a link in a model bundle is shipped as the file it points to.
        shutil.copytree(model, dest / name, symlinks=False)
        names.append(f"models/{name}")
    return names


def _write_support_files(
    root: Path, *, version: str, wheel_version: str, gpu: bool, python_version: str
) -> None:
    requirement = f"{PROJECT}[gpu]=={wheel_version}" if gpu else f"{PROJECT}=={wheel_version}"
    install = (
        _resource("install.sh")
        .replace("@VERSION@", version)
        .replace("@PACKAGE@", requirement)
        .replace("@GPU@", "1" if gpu else "0")
        .replace("@PYTHON@", python_version)
    )
    (root / "install.sh").write_text(install, encoding="utf-8")
    (root / "install.sh").chmod(0o755)
    (root / "systemd").mkdir()
    (root / "systemd" / "enclave.service").write_text(_resource("enclave.service"), encoding="utf-8")
    (root / "nginx").mkdir()
    (root / "nginx" / "enclave.conf").write_text(_resource("nginx.conf"), encoding="utf-8")
    (root / "README.txt").write_text(
        _resource("bundle-readme.txt").replace("@VERSION@", version), encoding="utf-8"
    )


def build_bundle(
    out: Path,
    *,
    models: Sequence[Path] = (),
    model_keys: Sequence[Path] = (),
    gpu: bool = False,
    platforms: Sequence[str] = (),
    python_version: str | None = None,
    signing_key: Path | None = None,
    source: Path | None = None,
    wheel: Path | None = None,
    version: str | None = None,
    pin_installed: bool = True,
    now: dt.datetime | None = None,
) -> Built:
    """Write a signed offline bundle to ``out`` (which must not exist yet).

    ``version`` defaults to the appliance wheel's version; a rebuild that should install over a
    site's current bundle needs a higher one (``1.2.3.1``). Without ``signing_key`` a new key is
    generated next to ``out`` as ``<out>.signing-key.pem``; keep it to sign that site's updates.
    """
    out = out.resolve()
    if out.exists():
        raise InputError(f"{out} already exists; choose a new directory for the bundle")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent} does not exist")
    _check_models(models)
    trusted_model_keys = _model_keys(models, model_keys)
    new_key: Path | None = None
    if signing_key is not None:
        key = load_private_key(signing_key)
    else:
        new_key = out.parent / f"{out.name}.signing-key.pem"
        key = generate_signing_key(new_key)
    python_version = python_version or _host_python()
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        wheels = staging / "wheels"
        wheels.mkdir()
        _, wheel_version = _project_wheel(wheels, source=source, wheel=wheel)
        with tempfile.TemporaryDirectory() as scratch:
            pins = _installed_pins(Path(scratch)) if pin_installed else None
            _collect_dependencies(
                wheels,
                version=wheel_version,
                gpu=gpu,
                platforms=platforms,
                python_version=python_version,
                pins=pins,
            )
        model_names: list[str] = []
        if models:
            (staging / "models").mkdir()
            model_names = _copy_models(models, staging / "models")
            (staging / "model-keys").mkdir()
            for kid, pem in sorted(trusted_model_keys.items()):
                (staging / "model-keys" / f"{kid}.pub").write_bytes(pem)
        bundle_version = version or wheel_version
        _write_support_files(
            staging,
            version=bundle_version,
            wheel_version=wheel_version,
            gpu=gpu,
            python_version=python_version,
        )
        created = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        manifest = write_manifest(
            staging,
            key,
            version=bundle_version,
            created=created,
            python=python_version,
            platforms=list(platforms) or [sysconfig.get_platform().replace("-", "_").replace(".", "_")],
            gpu=gpu,
            package=f"{PROJECT}=={wheel_version}",
            models=model_names,
        )
        staging.chmod(0o755)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if new_key is not None:
            new_key.unlink(missing_ok=True)
        raise
    return Built(path=out, manifest=manifest, signer=fingerprint(key.public_key()), new_key=new_key)
