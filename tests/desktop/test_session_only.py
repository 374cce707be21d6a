"""Issue #15 failure 2: with no keyring daemon (keyring's own "no backend" answer, as on a plain X session)
sign-in says so and offers a session-only sign-in — token in memory, nothing on disk — instead of a dead end."""

from __future__ import annotations

from pathlib import Path

from keyring.backends.fail import Keyring as NoKeyring
from pytestqt.qtbot import QtBot

from desktop.app import Dirs, build
from desktop.qt import Qt
from tests.helpers.desktop_fake_appliance import FakeAppliance
from tests.helpers.desktop_flows import WAIT_MS, confirm_and_connect, connect
from tests.helpers.desktop_tls import make_ca

URL = "https://appliance.test:8443"


def test_no_keyring_offers_session_only_sign_in(qtbot: QtBot, dirs: Dirs, tmp_path: Path) -> None:
    fake = FakeAppliance()
    app = build(dirs, keyring_backend=NoKeyring(), client_factory=fake.client_factory, poll_ms=60_000)
    app.window.show()
    try:
        confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
        dialog = app.window.show_sign_in()
        assert not dialog.keyring_note.isHidden() and "no system keyring is available" in dialog.keyring_note.text()
        assert dialog.session_only.isChecked() and not dialog.session_only.isHidden()
        dialog.username.setText("dev")
        dialog.password.setText("pw")
        with qtbot.waitSignal(app.connection.signedIn, timeout=WAIT_MS):
            qtbot.mouseClick(dialog.sign_in, Qt.MouseButton.LeftButton)
        assert "this session only" in app.window.connection_label.text()
        [token] = fake.tokens
        assert app.connection.credentials.load(URL) == token
        assert not any(token in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())
        with qtbot.waitSignal(app.connection.signedOut, timeout=WAIT_MS):
            app.window.action_sign_out.trigger()
        assert app.connection.credentials.load(URL) is None
    finally:
        app.close()


def test_unchecked_session_only_says_why_and_keeps_the_fields(qtbot: QtBot, dirs: Dirs, tmp_path: Path) -> None:
    fake = FakeAppliance()
    app = build(dirs, keyring_backend=NoKeyring(), client_factory=fake.client_factory, poll_ms=60_000)
    app.window.show()
    try:
        confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
        dialog = app.window.show_sign_in()
        dialog.session_only.setChecked(False)
        dialog.username.setText("dev")
        dialog.password.setText("pw")
        qtbot.mouseClick(dialog.sign_in, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not dialog.error.isHidden(), timeout=WAIT_MS)
        assert "no system keyring" in dialog.error.text()
        assert dialog.username.text() == "dev" and dialog.sign_in.isEnabled()
        assert not dialog.session_only.isHidden()
        assert fake.tokens == {}  # the session the server opened was closed again
    finally:
        app.close()
