"""The desktop's directory sign-in end to end: a real appliance (``enclave demo``) configured with a
real throwaway OpenLDAP ``slapd`` (LDAPS, its own CA), driven through the sign-in dialog with
pytest-qt, offscreen. The dialog learns from the appliance that a directory is offered, preselects
it, hides the SSO button (not configured here) and signs a directory user in; a local account
still signs in when the user picks it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pytestqt.qtbot import QtBot

from desktop.app import App
from desktop.ui.dialogs import SignInDialog
from tests.helpers.desktop_flows import confirm_and_connect, connect
from tests.helpers.desktop_keyring import MemoryKeyring
from tests.helpers.ldap_appliance import DIRECTORY_USERS, LdapSite, ldap_appliance

WAIT_MS = 60_000


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapSite]:
    with ldap_appliance(tmp_path_factory.mktemp("ldap-site")) as running:
        yield running


def _sign_in_dialog(qtbot: QtBot, make_app: Callable[..., App], site: LdapSite) -> tuple[App, SignInDialog]:
    app = make_app()
    confirm_and_connect(qtbot, app, connect(qtbot, app, site.appliance.url, str(site.appliance.ca_file)))
    with qtbot.waitSignal(app.connection.methodsKnown, timeout=WAIT_MS):
        dialog = app.window.show_sign_in()
    return app, dialog


def _submit(qtbot: QtBot, app: App, dialog: SignInDialog, username: str, password: str, *, ok: bool) -> None:
    dialog.username.setText(username)
    dialog.password.setText(password)
    with qtbot.waitSignal(app.connection.signedIn if ok else app.connection.failed, timeout=WAIT_MS):
        dialog.sign_in.click()


def test_a_directory_user_signs_in_from_the_dialog(
    qtbot: QtBot, make_app: Callable[..., App], site: LdapSite, memory_keyring: MemoryKeyring
) -> None:
    app, dialog = _sign_in_dialog(qtbot, make_app, site)
    assert dialog.offers_directory and dialog.account.currentData() == "ldap"
    assert dialog.sso.isHidden()  # single sign-on is not configured on this appliance
    _submit(qtbot, app, dialog, "alice", "not-alices-password", ok=False)
    assert dialog.error.text().startswith(
        "invalid username or password as a directory account. Check the user name and password, or pick"
    )
    assert "\n" not in dialog.error.text() and app.connection.session is None
    _submit(qtbot, app, dialog, "alice", DIRECTORY_USERS["alice"], ok=True)
    session = app.connection.session
    assert session is not None and (session.username, session.role) == ("alice", "developer")
    assert session.models  # the mapped team's models: the sign-in is a working one
    assert session.me is not None and session.me.credential == "session"
    [((_, url), token)] = memory_keyring.secrets.items()
    assert url == site.appliance.url and token.startswith("encl_")
    assert app.connection.profile is not None and app.connection.profile.account == "ldap"


def test_a_local_account_signs_in_when_picked(
    qtbot: QtBot, make_app: Callable[..., App], site: LdapSite
) -> None:
    app, dialog = _sign_in_dialog(qtbot, make_app, site)
    dialog.account.setCurrentIndex(dialog.account.findData("local"))
    _submit(qtbot, app, dialog, site.appliance.username, site.appliance.password, ok=True)
    session = app.connection.session
    assert session is not None and session.username == site.appliance.username
    assert app.connection.profile is not None and app.connection.profile.account == "local"
