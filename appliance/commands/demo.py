"""``enclave demo [--port 0] [--data DIR]``: one command for a newcomer.

Makes a data directory (a temporary one unless ``--data`` names a new one), runs every ``enclave
init`` step, builds the small demo model and installs it (signed with a key made for this demo and
pinned in that directory only), creates a developer account ``demo`` with a password and an API
token, and serves over HTTPS on loopback. The ``demo`` account is the operator's own (the person
running the demo is its only user), so its generated password is theirs to keep: unlike an account
made for someone else (``enclave user add``), it need not be changed at first sign-in. Once listening it prints ``ENCLAVE_URL=``, ``ENCLAVE_CA=``,
``ENCLAVE_TOKEN=`` and how to sign in. Ctrl-C stops it; a temporary directory is removed then.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from appliance.api.runtime import open_runtime
from appliance.api.server import bind, exit_on_sigterm, run_loop, serve
from appliance.api.tls import ca_fingerprint, tls_files
from appliance.audit.events import AuditEvent
from appliance.audit.log import AuditLog
from appliance.auth import admin
from appliance.auth import tokens as token_ops
from appliance.auth.change import Change
from appliance.commands._local_admin import model_installed
from appliance.commands.init import STEPS
from appliance.commands.serve import _port, announce
from appliance.config import Settings, load_settings
from appliance.db.base import utcnow
from appliance.db.engine import UnitOfWork, make_engine
from appliance.model.bundle import Bundle
from appliance.model.demo import build_demo
from appliance.model.signing import pin_public_key
from appliance.model.store import import_bundle
from shared.errors import ConflictError

__all__ = ["DEMO_USER", "prepare_demo", "register"]

DEMO_USER = "demo"


@dataclasses.dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str
    token: str


Record = Callable[[Change], None]


@contextmanager
def _audited_transaction(settings: Settings) -> Iterator[tuple[Session, Record]]:
    """One transaction on the demo's database, and a function that audits a change in it."""
    engine = make_engine(settings.db_url)
    try:
        audit = AuditLog.from_settings(settings, engine)
        try:
            with UnitOfWork(engine)() as session:

                def record(change: Change) -> None:
                    audit.append_in(
                        session,
                        AuditEvent(
                            action=change.action,
                            actor="cli:demo",
                            target=change.target,
                            details={"old": change.old, "new": change.new},
                        ),
                    )

                yield session, record
        finally:
            audit.close()
    finally:
        engine.dispose()


def _create_account(settings: Settings) -> DemoAccount:
    password = admin.one_time_password()
    with _audited_transaction(settings) as (session, record):
        now = utcnow()
        change, _ = admin.create_user(session, DEMO_USER, role="developer", now=now, password=password)
        user = admin.get_user(session, DEMO_USER)
        raw, _, token_change = token_ops.create_token(
            session, user.id, name="demo", expires_in=dt.timedelta(days=7), now=now
        )
        record(change)
        record(token_change)
    return DemoAccount(DEMO_USER, password, raw)


def _install_model(settings: Settings, bundle_dir: Path) -> None:
    """Import the bundle and record it in the database, in the transaction that commits only if the
    copy succeeds (as ``enclave model import`` does)."""
    with _audited_transaction(settings) as (session, record):

        def register(bundle: Bundle) -> None:
            record(model_installed(session, settings, bundle, now=utcnow()))

        import_bundle(bundle_dir, settings.data_dir, before_install=register)


def prepare_demo(data_dir: Path) -> tuple[Settings, DemoAccount]:
    """A ready data directory: init steps, the demo model installed, the demo account and token."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ConflictError(f"{data_dir} is not empty; enclave demo needs a new directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = load_settings(data_dir)
    for step in STEPS:
        step(settings)
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="enclave-demo-model-") as scratch:
        paths = build_demo(Path(scratch) / "demo", signing_key=key)
        pin_public_key(data_dir, key.public_key(), "demo")
        _install_model(settings, paths.bundle)
    return load_settings(data_dir), _create_account(settings)


def _run(args: argparse.Namespace) -> int:
    temporary = args.data is None
    data_dir = Path(tempfile.mkdtemp(prefix="enclave-demo-")) if temporary else Path(args.data).absolute()
    try:
        settings, account = prepare_demo(data_dir)
        settings = dataclasses.replace(settings, host="127.0.0.1", port=args.port)
        tls = tls_files(settings.tls_dir)
        listener = bind(settings.host, settings.port, tls=tls, insecure_http=False)
        runtime = open_runtime(settings, require_model=True)
        assert runtime.engine is not None  # require_model
        print(f"data directory: {data_dir}{' (temporary; removed on exit)' if temporary else ''}")
        print(f"model: {runtime.engine.model_id}")
        print(f"TLS CA SHA-256 fingerprint: {ca_fingerprint(tls.ca_cert)}")

        def ready(url: str) -> None:
            announce(url, str(tls.ca_cert), {"ENCLAVE_TOKEN": account.token})
            print(
                f"Sign in as {account.username!r} with password {account.password!r}: the desktop client "
                f"(enclave-desktop, server {url}, CA {tls.ca_cert}) or POST {url}/v1/auth/login.\n"
                f"Or use the token with any OpenAI client, e.g.:\n"
                f"  curl --cacert {tls.ca_cert} -H 'Authorization: Bearer {account.token}' {url}/v1/models\n"
                "Ctrl-C stops the demo.",
                flush=True,
            )

        try:
            exit_on_sigterm()
            run_loop(serve(runtime.app, listener, on_listening=ready))
        finally:
            runtime.close()
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=_port, default=8443, help="port on 127.0.0.1 (default 8443; 0 = any free)"
    )
    parser.add_argument(
        "--data", metavar="DIR", help="keep the demo in this new directory instead of a temporary one"
    )
    parser.set_defaults(func=_run)
