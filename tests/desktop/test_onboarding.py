"""Failure 9: every role can onboard. A user added by an admin signs in with the one-time password
the admin was shown and gets the change-password screen (not an empty window); a voluntary change
works from the menu; signing out or switching users takes the last user's data off the screen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pytestqt.qtbot import QtBot

from desktop.app import App
from desktop.client.credentials import SERVICE
from desktop.ui.password_dialog import ChangePasswordDialog
from tests.helpers.desktop_fake_appliance import FakeAppliance
from tests.helpers.desktop_flows import ask, confirm_and_connect, connect, open_file, open_project, sign_in
from tests.helpers.desktop_keyring import MemoryKeyring
from tests.helpers.desktop_tls import make_ca

URL = "https://appliance.test:8443"
NEW_PASSWORD = "a-long-enough-secret-2026"


def _connected(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path) -> App:
    app = make_app(client_factory=fake.client_factory)
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    return app


def _sign_out(qtbot: QtBot, app: App) -> None:
    with qtbot.waitSignal(app.connection.signedOut, timeout=20_000):
        app.window.action_sign_out.trigger()


def _add_user(qtbot: QtBot, app: App, name: str) -> str:
    admin = app.window.admin_pages
    admin.new_name.setText(name)
    with qtbot.waitSignal(app.admin.userAdded, timeout=20_000):
        admin.add_user.click()
    qtbot.waitUntil(lambda: any(u["username"] == name for u in admin.users), timeout=20_000)
    return admin.otp.text()


def test_a_new_user_changes_the_one_time_password_then_works(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, memory_keyring: MemoryKeyring, tmp_path: Path,
) -> None:
    app = _connected(qtbot, make_app, fake, tmp_path)
    with qtbot.waitSignal(app.admin.teams, timeout=20_000):
        sign_in(qtbot, app, "boss", "pw")
    otp = _add_user(qtbot, app, "newbie")
    assert otp and otp == fake.passwords["newbie"][0]
    _sign_out(qtbot, app)
    # The admin's lists and the one-time password are gone from the screen.
    admin = app.window.admin_pages
    assert admin.user_table.rowCount() == 0 and admin.team_table.rowCount() == 0 and admin.otp.text() == ""

    sign_in(qtbot, app, "newbie", otp)
    dialog = app.window.dialog
    assert isinstance(dialog, ChangePasswordDialog) and dialog.forced and dialog.isVisible()
    assert "must choose a new password" in app.window.banner_text.text()
    assert not app.window.workspace.editor.completion_enabled  # nothing works before the change
    # A wrong one-time password and a mismatch are refused next to the fields, which keep their text.
    dialog.current.setText("not-it")
    dialog.new.setText(NEW_PASSWORD)
    dialog.confirm.setText(NEW_PASSWORD)
    with qtbot.waitSignal(app.connection.failed, timeout=20_000):
        dialog.change.click()
    assert "current password is wrong" in dialog.error.text() and dialog.new.text() == NEW_PASSWORD
    dialog.current.setText(otp)
    dialog.confirm.setText(NEW_PASSWORD + "x")
    dialog.change.click()
    assert "differ" in dialog.error.text() and fake.must_change == {"newbie"}
    dialog.confirm.setText("short")
    dialog.new.setText("short")
    with qtbot.waitSignal(app.connection.failed, timeout=20_000):
        dialog.change.click()
    assert "too short" in dialog.error.text()

    dialog.new.setText(NEW_PASSWORD)
    dialog.confirm.setText(NEW_PASSWORD)
    with qtbot.waitSignal(app.connection.passwordChanged, timeout=20_000):
        dialog.change.click()
    session = app.connection.session
    assert session is not None and not session.must_change_password and session.models
    assert fake.passwords["newbie"][0] == NEW_PASSWORD and not fake.must_change
    # Signed in again with the new password (the change ended the old session); the token kept is live.
    stored = memory_keyring.get_password(SERVICE, URL)
    assert stored in fake.tokens and fake.tokens[stored] == "newbie"
    qtbot.waitUntil(lambda: app.window.dialog is None, timeout=20_000)
    assert app.window.banner.isHidden() and app.window.workspace.editor.completion_enabled
    assert app.window.action_password.isEnabled()


def test_leaving_the_forced_change_signs_out(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path,
) -> None:
    app = _connected(qtbot, make_app, fake, tmp_path)
    fake.passwords["newbie"] = ("otp-1", "developer")
    fake.must_change.add("newbie")
    sign_in(qtbot, app, "newbie", "otp-1")
    dialog = app.window.dialog
    assert isinstance(dialog, ChangePasswordDialog) and dialog.leave.text() == "Sign out"
    with qtbot.waitSignal(app.connection.signedOut, timeout=20_000):
        dialog.leave.click()
    assert app.connection.session is None and not fake.tokens


def test_a_voluntary_change_from_the_menu(
    qtbot: QtBot, signed_in: App, fake: FakeAppliance, memory_keyring: MemoryKeyring,
) -> None:
    app = signed_in
    assert app.window.action_password.isEnabled()
    app.window.action_password.trigger()
    dialog = app.window.dialog
    assert isinstance(dialog, ChangePasswordDialog) and not dialog.forced and dialog.leave.text() == "Cancel"
    dialog.current.setText("pw")
    dialog.new.setText(NEW_PASSWORD)
    dialog.confirm.setText(NEW_PASSWORD)
    with qtbot.waitSignal(app.connection.passwordChanged, timeout=20_000):
        dialog.change.click()
    assert fake.passwords["dev"][0] == NEW_PASSWORD
    assert fake.tokens[memory_keyring.get_password(SERVICE, URL) or ""] == "dev"


def test_a_reset_during_a_session_opens_the_change_screen(qtbot: QtBot, signed_in: App, fake: FakeAppliance) -> None:
    app = signed_in
    fake.must_change.add("dev")  # an admin gave dev a one-time password meanwhile
    with qtbot.waitSignal(app.admin.failed, timeout=20_000):
        app.admin.load_users()
    assert isinstance(app.window.dialog, ChangePasswordDialog) and app.window.dialog.forced


def test_switching_users_clears_the_last_users_data(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path, fixture_project: Path,
) -> None:
    app = _connected(qtbot, make_app, fake, tmp_path)
    console = app.window.audit_console
    with qtbot.waitSignal(app.audit.page, timeout=20_000):
        sign_in(qtbot, app, "aud", "pw")
    assert console.table.rowCount() > 0
    _sign_out(qtbot, app)
    assert console.table.rowCount() == 0 and not console.records and console.detail.toPlainText() == ""

    # A developer's question, answer and history go too, and do not come back for the next user.
    sign_in(qtbot, app, "dev", "pw")
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/cart.py")
    ask(qtbot, app, "what does total do?")
    ws = app.window.workspace
    qtbot.waitUntil(lambda: ws.history_list.count() == 1, timeout=20_000)
    ws.editor.insertPlainText("# unsaved\n")
    _sign_out(qtbot, app)
    panel = ws.panel
    assert panel.answer.toPlainText() == "" and panel.question.toPlainText() == ""
    assert panel.context_list.count() == 0 and ws.history_list.count() == 0 and ws.context is None
    assert ws.unsaved() == ["src/shop/cart.py"]  # the local file's edits are not the account's: kept
    with qtbot.waitSignal(app.history_service.loaded, timeout=20_000):
        sign_in(qtbot, app, "boss", "pw")
    assert ws.history_list.count() == 0  # dev's history is dev's
    assert console.table.rowCount() == 0  # an admin verifies the chain; the auditor's rows stay gone
