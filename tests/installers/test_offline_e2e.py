"""End to end: build an offline bundle, install it with no network, serve, sign in, generate, upgrade.

The bundle is built once per session (its wheels are the expensive part: pinned to the versions
installed here, fetched once). Everything "on the site" runs under the network guard, which makes
any non-loopback connection attempt fail and records it; the tests assert it recorded none, and
that it was active.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.cli import main as enclave
from appliance.db import migrate
from appliance.model.demo import DEMO_VERSION
from installers.offline.manifest import (
    MANIFEST,
    SIGNATURE,
    fingerprint,
    generate_signing_key,
    load_private_key,
    read_manifest,
    write_manifest,
)
from tests.helpers.accounts import choose_password, one_time_password
from tests.helpers.offline_site import (
    MIGRATION_REVISION,
    MIGRATION_TABLE,
    Site,
    copy_bundle,
    generate,
    login,
    replace_file,
    serving,
    wheel_with_migration,
)

# The upgrade test's newer build of the demo model.
NEWER = DEMO_VERSION + 1

pytestmark = pytest.mark.slow

DEV_PASSWORD = "Tessellated-Harbour-Lantern-2026"


@dataclass(frozen=True)
class Offline:
    bundle: Path
    key: Path  # the bundle signing key (private)
    fingerprint: str
    model_key: Path
    checkpoint: Path  # the demo checkpoint, to build a newer model version from


def _dev(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The build machine's `enclave` (this checkout's environment)."""
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"enclave {args}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Offline:
    root = tmp_path_factory.mktemp("build-machine")
    model_key = root / "model-signing.pem"
    generate_signing_key(model_key)
    _dev("model", "demo", root / "demo", "--signing-key", model_key)
    key = root / "bundle-signing.pem"
    _dev("bundle", "keygen", key)
    _dev(
        "bundle", "build", root / "bundle",
        "--model", root / "demo" / "bundle",
        "--model-key", model_key,
        "--signing-key", key,
    )  # fmt: skip
    return Offline(
        bundle=root / "bundle",
        key=key,
        fingerprint=fingerprint(load_private_key(key).public_key()),
        model_key=model_key,
        checkpoint=root / "demo" / "checkpoint",
    )


def _new_site(tmp_path_factory: pytest.TempPathFactory, name: str) -> Site:
    root = tmp_path_factory.mktemp(name)
    return Site(
        root=root,
        prefix=root / "opt" / "enclave",
        data=root / "var" / "enclave",
        netlog=root / "netguard.log",
    )


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory, offline: Offline) -> Iterator[tuple[Site, str]]:
    """A site with the bundle installed; yields it and install.sh's output."""
    site = _new_site(tmp_path_factory, "site")
    proc = site.install(offline.bundle, "--fingerprint", offline.fingerprint)
    assert proc.returncode == 0, f"install.sh failed:\n{proc.stdout}\n{proc.stderr}"
    yield site, proc.stdout


def _resign(bundle: Path, key: Ed25519PrivateKey, version: str, package: str | None = None) -> None:
    """Make ``bundle`` (a copy) claim ``version`` and sign it: a genuine newer or older build."""
    manifest, _ = read_manifest(bundle)
    script = bundle / "install.sh"
    text = re.sub(r'^BUNDLE_VERSION=".*"$', f'BUNDLE_VERSION="{version}"', script.read_text(), flags=re.M)
    if package is not None:
        text = re.sub(r'^PACKAGE=".*"$', f'PACKAGE="{package}"', text, flags=re.M)
    replace_file(script, text.encode())
    script.chmod(0o755)
    write_manifest(
        bundle,
        key,
        version=version,
        created=manifest.created,
        python=manifest.python,
        platforms=manifest.platforms,
        gpu=manifest.gpu,
        package=package or manifest.package,
        models=[p.relative_to(bundle).as_posix() for p in sorted((bundle / "models").iterdir())],
    )


def _tables(site: Site) -> set[str]:
    with sqlite3.connect(site.data / "enclave.db") as db:
        return {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}


def test_bundle_holds_the_appliance_and_no_test_only_packages(offline: Offline) -> None:
    manifest, _ = read_manifest(offline.bundle)
    wheels = {p.split("/", 1)[1].split("-", 1)[0].lower() for p in manifest.files if p.startswith("wheels/")}
    assert {"enclave_codegen", "onnxruntime", "cryptography", "fastapi", "sqlalchemy", "pip"} <= wheels
    assert not wheels & {"torch", "transformers", "pytest", "onnxruntime_gpu"}
    # The desktop client's stack is the [desktop] extra: a server gets no Qt and no keyring (httpx
    # it does get: the appliance's OIDC client talks to the site's IdP with it).
    assert not wheels & {"pyside6_essentials", "shiboken6", "keyring"}
    assert manifest.models == (f"models/deepseek-v4-demo-{DEMO_VERSION}",)
    assert any(p.startswith("model-keys/") for p in manifest.files)
    assert {"install.sh", "systemd/enclave.service", "nginx/enclave.conf"} <= set(manifest.files)


def test_install_serve_sign_in_and_generate_without_network(installed: tuple[Site, str]) -> None:
    site, out = installed
    # install.sh printed how to sign in, with the first admin's one-time password.
    match = re.search(r"one-time password[^:]*: (\S+)", out)
    assert match, out
    assert re.search(r"sign in:\s+https://127\.0\.0\.1:8443\s+as 'admin' with the one-time password", out), (
        out
    )
    assert site.enclave.resolve().is_relative_to(site.prefix / "releases")
    proc = site.run([site.enclave, "user", "add", "dev", "--data", site.data])
    assert proc.returncode == 0, proc.stderr
    with serving(site) as server:
        assert server.url.startswith("https://127.0.0.1:")
        with server.client() as c:
            choose_password(c, "dev", one_time_password(proc.stdout), DEV_PASSWORD)
        admin_token = login(server, "admin", match.group(1))
        with server.client(admin_token) as c:
            r = c.post(
                "/v1/auth/password",
                json={"old_password": match.group(1), "new_password": "Quartz-Meridian-Falcon-7731"},
            )
        assert r.status_code == 204, r.text
        token = login(server, "dev", DEV_PASSWORD)
        body = generate(server, token)
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] >= 1
    # The guard ran in the installer's pip, in the CLI and in the server; nobody tried to go out.
    active = site.netlog_records()
    assert any(r["event"] == "netguard.active" and r["pid"] == server.pid for r in active)
    assert any("pip" in " ".join(r.get("argv", [])) for r in active if r["event"] == "netguard.active")
    assert site.outbound_attempts() == []


def test_guard_catches_an_outbound_attempt_from_the_installed_python(installed: tuple[Site, str]) -> None:
    # Positive control: the same guard, in the installed environment, does refuse and record.
    site, _ = installed
    python = site.prefix / "current" / "bin" / "python"
    proc = site.run([python, "-c", "import socket; socket.create_connection(('192.0.2.7', 443), timeout=2)"])
    assert proc.returncode != 0 and "netguard" in proc.stderr
    assert [r["address"] for r in site.outbound_attempts()] == ["'192.0.2.7'"]
    site.netlog.write_text("")  # leave the log clean for whoever reads it next


@pytest.mark.parametrize(
    "kind", ["changed file", "changed wheel", "extra file", "missing file", "swapped manifest"]
)
def test_tampered_bundle_is_refused_before_anything_is_installed(
    tmp_path_factory: pytest.TempPathFactory, offline: Offline, kind: str
) -> None:
    work = tmp_path_factory.mktemp("tamper")
    bad = copy_bundle(offline.bundle, work / "bundle")
    model = next((bad / "models").iterdir())
    if kind == "changed file":
        target = model / "model.onnx.data"
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        replace_file(target, bytes(data))
        reason = "file changed: models/"
    elif kind == "changed wheel":
        target = next((bad / "wheels").glob("onnxruntime-*.whl"))
        data = bytearray(target.read_bytes())
        data[len(data) // 3] ^= 0x01
        replace_file(target, bytes(data))
        reason = "file changed: wheels/onnxruntime-"
    elif kind == "extra file":
        (bad / "wheels" / "backdoor-1.0-py3-none-any.whl").write_bytes(b"PK\x05\x06" + b"\0" * 18)
        reason = "not listed in the manifest: wheels/backdoor-1.0"
    elif kind == "missing file":
        (model / "tokenizer.json").unlink()
        reason = "missing: models/"
    else:
        # The genuine manifest and signature of another build (a newer one), over these files.
        other = copy_bundle(offline.bundle, work / "other")
        _resign(other, load_private_key(offline.key), "0.1.0.7")
        replace_file(bad / MANIFEST, (other / MANIFEST).read_bytes())
        replace_file(bad / SIGNATURE, (other / SIGNATURE).read_bytes())
        reason = "file changed: install.sh"
    assert enclave(["bundle", "verify", str(bad), "--fingerprint", offline.fingerprint]) == 1
    site = _new_site(tmp_path_factory, "tampered-site")
    proc = site.install(bad, "--fingerprint", offline.fingerprint)
    assert proc.returncode != 0
    assert reason in proc.stderr, proc.stderr
    assert not (site.prefix / "current").exists()
    assert list((site.prefix / "releases").iterdir()) == []
    assert not (site.data / "enclave.toml").exists()


def test_bundle_signed_by_another_key_is_refused_at_first_install(
    tmp_path_factory: pytest.TempPathFactory, offline: Offline
) -> None:
    work = tmp_path_factory.mktemp("foreign")
    foreign = copy_bundle(offline.bundle, work / "bundle")
    _resign(foreign, Ed25519PrivateKey.generate(), "0.1.0")
    site = _new_site(tmp_path_factory, "foreign-site")
    proc = site.install(foreign, "--fingerprint", offline.fingerprint)
    assert proc.returncode != 0
    assert f"not the expected {offline.fingerprint}" in proc.stderr, proc.stderr
    assert not (site.prefix / "current").exists()
    # Without a fingerprint a first install is refused outright.
    proc = site.install(offline.bundle)
    assert proc.returncode != 0 and "--fingerprint" in proc.stderr


def test_upgrade_in_place_then_older_and_tampered_bundles_are_refused(
    tmp_path_factory: pytest.TempPathFactory, offline: Offline, installed: tuple[Site, str]
) -> None:
    site, _ = installed
    key = load_private_key(offline.key)
    work = tmp_path_factory.mktemp("upgrade")
    proc = site.run([site.enclave, "user", "add", "dev-up", "--data", site.data])
    assert proc.returncode == 0, proc.stderr
    with serving(site) as server:
        with server.client() as c:
            choose_password(c, "dev-up", one_time_password(proc.stdout), DEV_PASSWORD)
        generate(server, login(server, "dev-up", DEV_PASSWORD))
    checkpoint = work / "before.checkpoint"
    proc = site.run([site.enclave, "audit", "checkpoint", "--data", site.data, "--export", checkpoint])
    assert proc.returncode == 0, proc.stderr
    before_release = site.enclave.resolve()

    # A newer bundle, version 0.1.0.1: the appliance with one more schema migration, and a newer
    # build of the demo model.
    newer = copy_bundle(offline.bundle, work / "newer")
    old_wheel = next((newer / "wheels").glob("enclave_codegen-*.whl"))
    wheel_with_migration(old_wheel, newer / "wheels", version="0.1.0.1", down_revision=migrate.head())
    old_wheel.unlink()
    _dev(
        "model", "build", offline.checkpoint, newer / "models" / f"deepseek-v4-demo-{NEWER}",
        "--name", "deepseek-v4-demo", "--version", str(NEWER), "--signing-key", offline.model_key,
    )  # fmt: skip
    _resign(newer, key, "0.1.0.1", package="enclave-codegen==0.1.0.1")
    assert not _tables(site) & {MIGRATION_TABLE}
    proc = site.install(newer)
    assert proc.returncode == 0, f"upgrade failed:\n{proc.stdout}\n{proc.stderr}"
    assert f"{migrate.head()} -> {MIGRATION_REVISION}" in proc.stdout, proc.stdout
    assert MIGRATION_TABLE in _tables(site)
    assert f"model deepseek-v4-demo version {DEMO_VERSION} is already installed" in proc.stdout
    after_release = site.enclave.resolve()
    assert after_release != before_release and after_release.parents[1].name.startswith("0.1.0.1-")
    models = site.run([site.enclave, "model", "list", "--data", site.data])
    assert re.search(rf"^\*\s+deepseek-v4-demo\s+{NEWER}\s.*\ssealed\s", models.stdout, re.M), models.stdout
    # The audit chain continued: the log still verifies against the checkpoint taken before.
    proc = site.run([site.enclave, "audit", "verify", "--data", site.data, "--checkpoint", checkpoint])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with serving(site) as server:
        body = generate(server, login(server, "dev-up", DEV_PASSWORD))
        assert body["usage"]["completion_tokens"] >= 1
    proc = site.run([site.enclave, "audit", "verify", "--data", site.data, "--checkpoint", checkpoint])
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # Installing the same bundle again is a no-op.
    proc = site.install(newer)
    assert proc.returncode == 0 and "already installed" in proc.stdout

    # Older: refused by the installed appliance, nothing changes.
    older = copy_bundle(offline.bundle, work / "older")
    _resign(older, key, "0.0.9")
    proc = site.install(older)
    assert proc.returncode != 0 and "older than the installed 0.1.0.1" in proc.stderr, proc.stderr
    # Newer but tampered after signing: refused, nothing changes.
    tampered = copy_bundle(newer, work / "tampered")
    _resign(tampered, key, "0.1.0.2")
    (tampered / "install.sh").chmod(0o755)
    replace_file(tampered / "nginx" / "enclave.conf", b"# nothing to see\n")
    proc = site.install(tampered)
    assert proc.returncode != 0 and "file changed: nginx/enclave.conf" in proc.stderr, proc.stderr
    # Newer but signed by someone else: refused against the key pinned at first install.
    foreign = copy_bundle(newer, work / "foreign")
    _resign(foreign, Ed25519PrivateKey.generate(), "0.1.0.3")
    proc = site.install(foreign)
    assert proc.returncode != 0 and "signature does not verify" in proc.stderr, proc.stderr
    assert site.enclave.resolve() == after_release
    assert site.outbound_attempts() == []


def test_two_replicas_share_one_postgresql_database(
    tmp_path: Path, pg_url: str, offline: Offline, installed: tuple[Site, str]
) -> None:
    """The replica recipe of nginx/enclave.conf: init once against PostgreSQL, copy the data directory."""
    site, _ = installed

    def replica(name: str) -> Site:
        root = tmp_path / name
        (root / "home").mkdir(parents=True)
        return Site(root=root, prefix=site.prefix, data=root / "data", netlog=tmp_path / "netguard.log")

    first, second = replica("first"), replica("second")
    proc = first.run([first.enclave, "init", "--data", first.data, "--database-url", pg_url])
    assert proc.returncode == 0, proc.stderr
    trusted = first.data / "keys" / "trusted_models"
    trusted.mkdir(exist_ok=True)
    for pub in (offline.bundle / "model-keys").iterdir():
        shutil.copy2(pub, trusted / pub.name)
    proc = first.run(
        [
            first.enclave,
            "model",
            "import",
            offline.bundle / "models" / f"deepseek-v4-demo-{DEMO_VERSION}",
            "--data",
            first.data,
        ]
    )
    assert proc.returncode == 0, proc.stderr
    shutil.copytree(first.data, second.data)
    proc = second.run([second.enclave, "user", "add", "dev-pg", "--data", second.data])
    assert proc.returncode == 0, proc.stderr
    with serving(first) as one, serving(second) as two:
        with one.client() as c:
            choose_password(c, "dev-pg", one_time_password(proc.stdout), DEV_PASSWORD)
        token = login(one, "dev-pg", DEV_PASSWORD)  # signed in on one replica...
        assert generate(two, token)["usage"]["completion_tokens"] >= 1  # ...served by the other
        assert generate(one, token)["usage"]["completion_tokens"] >= 1
    verified = [r.run([r.enclave, "audit", "verify", "--data", r.data]) for r in (first, second)]
    for proc in verified:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # One chain: both replicas see the same records.
    assert verified[0].stdout == verified[1].stdout
    assert first.outbound_attempts() == []
