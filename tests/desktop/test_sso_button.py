"""The sign-in dialog's "Sign in with SSO…": the system browser is opened at the identity provider's
page, the loopback redirect carries the code back, and the client is signed in; a refusal or an
appliance without single sign-on is said in the dialog, which stays usable. The end-to-end flow with
a real identity provider is in tests/appliance/identity/test_oidc_e2e.py (oidc-provider)."""

from __future__ import annotations

import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pytestqt.qtbot import QtBot

from desktop.app import App
from desktop.ui.dialogs import SignInDialog
from tests.helpers.desktop_fake_appliance import FakeAppliance
from tests.helpers.desktop_flows import confirm_and_connect, connect
from tests.helpers.desktop_keyring import MemoryKeyring
from tests.helpers.desktop_tls import make_ca

URL = "https://appliance.test:8443"


def _browser(code: str, opened: list[str]) -> Callable[[str], None]:
    """Stands in for the user's browser and the identity provider: follows the authorization URL to
    the loopback redirect with ``code`` (off the caller's thread, as a browser would)."""

    def open_url(url: str) -> None:
        opened.append(url)
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        target = f"{query['redirect_uri']}?{urllib.parse.urlencode({'code': code, 'state': query['state']})}"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
        threading.Thread(target=lambda: direct.open(target, timeout=10).read(), daemon=True).start()

    return open_url


def _dialog(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path, code: str,
            opened: list[str]) -> tuple[App, SignInDialog]:
    app = make_app(client_factory=fake.client_factory, open_browser=_browser(code, opened))
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    return app, app.window.show_sign_in()


def test_sign_in_with_sso(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance,
                          memory_keyring: MemoryKeyring, tmp_path: Path) -> None:
    fake.sso_user = "dev"
    opened: list[str] = []
    app, dialog = _dialog(qtbot, make_app, fake, tmp_path, "good-code", opened)
    with qtbot.waitSignal(app.connection.signedIn, timeout=20_000):
        dialog.sso.click()
    assert opened and opened[0].startswith("https://idp.test/authorize?")
    assert app.connection.session is not None and app.connection.session.username == "dev"
    assert memory_keyring.secrets and next(iter(memory_keyring.secrets.values())) in fake.tokens


def test_sso_refused_or_not_configured_is_said_in_the_dialog(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path,
) -> None:
    opened: list[str] = []
    app, dialog = _dialog(qtbot, make_app, fake, tmp_path, "bad-code", opened)
    with qtbot.waitSignal(app.connection.failed, timeout=20_000):
        dialog.sso.click()
    assert "not configured" in dialog.error.text() and not opened
    fake.sso_user = "dev"
    with qtbot.waitSignal(app.connection.failed, timeout=20_000):
        dialog.sso.click()
    assert "could not be verified" in dialog.error.text() and dialog.sso.isEnabled() and dialog.sign_in.isEnabled()
    assert app.connection.session is None
