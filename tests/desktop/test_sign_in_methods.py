"""The sign-in dialog shows what the appliance offers (``GET /v1/auth/methods``): with a directory,
the password tab asks which account the password is for (the directory first, then the last choice,
kept in the connection profile); the SSO button only where single sign-on is configured; an older
appliance (404) gets the password and the SSO button as before. The end to end sign-in against a
real appliance and a real slapd is tests/desktop/test_e2e_ldap_sign_in.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pytestqt.qtbot import QtBot

from desktop.app import App
from desktop.client.profile import ProfileStore
from desktop.dirs import Dirs
from desktop.ui.dialogs import SignInDialog
from tests.helpers.desktop_fake_appliance import FakeAppliance
from tests.helpers.desktop_flows import confirm_and_connect, connect
from tests.helpers.desktop_tls import make_ca

URL = "https://appliance.test:8443"
PASSWORD = {"kind": "password", "display_name": "Enclave account", "login_path": "/v1/auth/login"}
LDAP = {"kind": "ldap", "display_name": "Directory (ldap.test)", "login_path": "/v1/auth/ldap/login"}
SSO = {"kind": "sso", "display_name": "Single sign-on (idp.test)", "login_path": "/v1/auth/oidc/start"}


def _dialog(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path
) -> tuple[App, SignInDialog]:
    app = make_app(client_factory=fake.client_factory)
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    return app, _open(qtbot, app)


def _open(qtbot: QtBot, app: App) -> SignInDialog:
    with qtbot.waitSignal(app.connection.methodsKnown, timeout=20_000):
        dialog = app.window.show_sign_in()
    return dialog


def _sign_in(qtbot: QtBot, app: App, dialog: SignInDialog, username: str, password: str) -> None:
    dialog.username.setText(username)
    dialog.password.setText(password)
    with qtbot.waitSignal(app.connection.signedIn, timeout=20_000):
        dialog.sign_in.click()


def test_an_appliance_that_does_not_say_keeps_password_and_sso(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path
) -> None:
    app, dialog = _dialog(qtbot, make_app, fake, tmp_path)
    assert not dialog.offers_directory and dialog.account.isHidden()
    assert not dialog.sso.isHidden()
    _sign_in(qtbot, app, dialog, "dev", "pw")
    assert app.connection.session is not None and app.connection.session.username == "dev"


def test_directory_offered_is_preselected_and_sso_hidden_when_not_configured(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path, dirs: Dirs
) -> None:
    fake.methods = [PASSWORD, LDAP]
    fake.directory = {"alice": ("alice-directory-pw", "developer")}
    app, dialog = _dialog(qtbot, make_app, fake, tmp_path)
    assert dialog.offers_directory and not dialog.account.isHidden()
    assert dialog.account.currentData() == "ldap"
    assert dialog.account.currentText() == "Directory account (LDAP / Active Directory)"
    assert dialog.sso.isHidden()
    _sign_in(qtbot, app, dialog, "alice", "alice-directory-pw")
    assert app.connection.session is not None and app.connection.session.username == "alice"
    saved = ProfileStore(dirs.config).load()  # what the next start reads
    assert saved is not None and (saved.username, saved.account) == ("alice", "ldap")


def test_local_choice_is_remembered_in_the_profile(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path
) -> None:
    fake.methods = [PASSWORD, LDAP, SSO]
    fake.directory = {"alice": ("alice-directory-pw", "developer")}
    app, dialog = _dialog(qtbot, make_app, fake, tmp_path)
    assert not dialog.sso.isHidden()
    # The local password is not the directory's: as a directory account it is refused, and said so.
    dialog.username.setText("dev")
    dialog.password.setText("pw")
    with qtbot.waitSignal(app.connection.failed, timeout=20_000):
        dialog.sign_in.click()
    assert "as a directory account. Check" in dialog.error.text() and app.connection.session is None
    dialog.account.setCurrentIndex(dialog.account.findData("local"))
    _sign_in(qtbot, app, dialog, "dev", "pw")
    assert app.connection.profile is not None and app.connection.profile.account == "local"
    with qtbot.waitSignal(app.connection.signedOut, timeout=20_000):
        app.connection.sign_out()
    again = _open(qtbot, app)
    assert (
        again.offers_directory and again.account.currentData() == "local" and again.username.text() == "dev"
    )


def test_directory_down_is_one_line_saying_so(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path
) -> None:
    fake.methods = [PASSWORD, LDAP]
    fake.directory = {"alice": ("alice-directory-pw", "developer")}
    fake.directory_down = True
    app, dialog = _dialog(qtbot, make_app, fake, tmp_path)
    dialog.username.setText("alice")
    dialog.password.setText("alice-directory-pw")
    with qtbot.waitSignal(app.connection.failed, timeout=20_000):
        dialog.sign_in.click()
    text = dialog.error.text()
    assert text.startswith(
        "The appliance cannot use the site directory (directory ldaps://ldap.test is unreachable"
    )
    assert "\n" not in text and dialog.sign_in.isEnabled() and dialog.password.text() == "alice-directory-pw"
