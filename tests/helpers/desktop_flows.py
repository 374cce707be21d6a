"""User flows through the desktop UI, driven with pytest-qt; shared by the tests against the fake
appliance and those against the real one (``enclave demo``)."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from desktop.app import App
from desktop.qt import Qt, QTextCursor
from desktop.ui.dialogs import ConnectDialog, SignInDialog

__all__ = ["ask", "connect", "open_file", "open_project", "select_lines", "sign_in"]

WAIT_MS = 60_000


def connect(qtbot: QtBot, app: App, url: str, ca_path: str) -> ConnectDialog:
    """First connection: inspect the CA, check the shown fingerprint, confirm, connect."""
    dialog = app.window.show_connect(url=url, ca_path=ca_path)
    with qtbot.waitSignal(app.connection.caInspected, timeout=WAIT_MS):
        qtbot.mouseClick(dialog.inspect, Qt.MouseButton.LeftButton)
    return dialog


def confirm_and_connect(qtbot: QtBot, app: App, dialog: ConnectDialog) -> None:
    dialog.confirm.setChecked(True)
    with qtbot.waitSignal(app.connection.connected, timeout=WAIT_MS):
        qtbot.mouseClick(dialog.connect_button, Qt.MouseButton.LeftButton)


def sign_in(qtbot: QtBot, app: App, username: str, password: str) -> SignInDialog:
    dialog = app.window.show_sign_in()
    dialog.tabs.setCurrentIndex(0)
    dialog.username.setText(username)
    dialog.password.setText(password)
    with qtbot.waitSignal(app.connection.signedIn, timeout=WAIT_MS):
        qtbot.mouseClick(dialog.sign_in, Qt.MouseButton.LeftButton)
    return dialog


def open_project(qtbot: QtBot, app: App, root: Path) -> None:
    with qtbot.waitSignal(app.project.indexed, timeout=WAIT_MS):
        app.project.open(str(root))
    qtbot.waitUntil(lambda: app.window.workspace.tree_model.rowCount() > 0, timeout=WAIT_MS)


def open_file(qtbot: QtBot, app: App, rel: str) -> None:
    editor = app.window.workspace.editor
    with qtbot.waitSignal(app.project.fileLoaded, timeout=WAIT_MS):
        app.window.workspace.open_file(rel)
    assert editor.path == rel


def select_lines(app: App, first: int, last: int) -> None:
    editor = app.window.workspace.editor
    doc = editor.document()
    cursor = QTextCursor(doc.findBlockByNumber(first - 1))
    end = doc.findBlockByNumber(last - 1)
    cursor.setPosition(end.position() + end.length() - 1, QTextCursor.MoveMode.KeepAnchor)
    editor.setTextCursor(cursor)


def ask(qtbot: QtBot, app: App, question: str) -> None:
    """Type the question, gather context, then send and wait for the answer to finish."""
    panel = app.window.workspace.panel
    panel.question.setPlainText(question)
    with qtbot.waitSignal(app.project.contextReady, timeout=WAIT_MS):
        qtbot.mouseClick(panel.prepare, Qt.MouseButton.LeftButton)
    assert panel.context_list.count() > 0
    with qtbot.waitSignal(app.generation.finished, timeout=WAIT_MS * 2):
        qtbot.mouseClick(panel.send, Qt.MouseButton.LeftButton)
