"""A working day in the real desktop client, driven in-process with Qt's test API (QTest) on the X
display in $DISPLAY: tests/desktop/test_x_day.py runs it as its own process, for a fresh user (HOME
in a temp dir, no D-Bus session, so no keyring daemon) against a real appliance.

    python -m tests.helpers.desktop_x_day SPEC.json REPORT.json

SPEC names the appliance (url, ca, fingerprint), the accounts (user/password, admin/admin_password),
the project folder and its files (big: larger than the model's context; small: the edit target;
other: a second file). Each step appends what it saw to REPORT; a step that cannot finish raises,
which is reported with the step's name and a non-zero exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from PySide6.QtTest import QTest

from desktop.app import App, Dirs, build, start
from desktop.client.api import ApplianceClient, StreamEvent
from desktop.qt import QApplication, QEvent, QObject, Qt, QTextCursor, QWidget
from desktop.ui.dialogs import ConnectDialog, SignInDialog
from desktop.ui.password_dialog import ChangePasswordDialog

WAIT_S = 120.0
HOLD_S = 10.0  # how long a paced stream waits for a paint before it records a miss and reads on


class StepFailed(Exception):
    pass


def wait_until(what: str, condition: Callable[[], object], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out waiting for {what}")
        QTest.qWait(20)


def click(widget: QWidget) -> None:
    if not widget.isEnabled():
        raise StepFailed(f"{widget.objectName() or type(widget).__name__} {getattr(widget, 'text', lambda: '')()!r} is disabled")
    QTest.mouseClick(widget, Qt.MouseButton.LeftButton)


def type_into(widget: QWidget, text: str) -> None:
    """Type ``text`` as key presses (QTest has no key for a newline character: Return is pressed)."""
    widget.setFocus()
    for i, line in enumerate(text.split("\n")):
        if i:
            QTest.keyClick(widget, Qt.Key.Key_Return)
        if line:
            QTest.keyClicks(widget, line)


def mapped(name: str) -> bool:
    """Whether the X server has a visible window with this title (as a window manager sees it)."""
    out = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", name], capture_output=True, text=True, check=False)
    return bool(out.stdout.split())


class Paints(QObject):
    """What the answer view showed, one entry per paint: its text, and how much of the answer had been
    rendered into it. Streams wait on it (see PacedClient)."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self.panel = app.window.workspace.panel
        self.texts: list[str] = []
        self.cond = threading.Condition()
        self.painted_chars = 0

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            with self.cond:
                self.texts.append(self.panel.answer.toPlainText())
                self.painted_chars = max(self.painted_chars, len(self.panel.rendered_text))
                self.cond.notify_all()
        return False

    def wait_painted(self, chars: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.painted_chars >= chars, HOLD_S)


class PacedClient(ApplianceClient):
    """The real client, talking to the real appliance, that reads the next piece of a chat stream only
    once the answer view has painted the last one (or HOLD_S passed: recorded as a miss). The demo model
    can produce a short answer within one frame; pacing makes "each piece is painted" decidable."""

    paints: ClassVar[Paints | None] = None
    misses: ClassVar[list[int]] = []

    def stream_chat(self, request: Any, cancel: threading.Event | None = None) -> Iterator[StreamEvent]:
        shown = 0
        for i, event in enumerate(super().stream_chat(request, cancel)):
            yield event
            shown += len(event.text or "")
            if self.paints is not None and event.text and not self.paints.wait_painted(shown):
                PacedClient.misses.append(i)


class Day:
    def __init__(self, spec: dict[str, Any], report: Path) -> None:
        self.spec = spec
        self.report_path = report
        self.report: dict[str, Any] = {"steps": []}
        self.app = build(Dirs.for_user(), completion_pause_ms=300, client_factory=PacedClient)
        self.window = self.app.window
        self.ws = self.window.workspace
        self.window.show()
        self.shots = Path(spec["shots"]) if spec.get("shots") else None
        self.otp = ""
        self._last_password = ""

    def record(self, step: str, **seen: Any) -> None:
        self.report["steps"].append({"step": step, **seen})
        self.report_path.write_text(json.dumps(self.report, indent=1))

    def shot(self, name: str, widget: QWidget | None = None) -> None:
        if self.shots is not None:
            QTest.qWait(150)
            (widget or self.window).grab().save(str(self.shots / f"{name}.png"))

    def signal(self, signal: Any, trigger: Callable[[], object], what: str, timeout: float = WAIT_S) -> list[Any]:
        got: list[Any] = []
        slot = lambda *args: got.append(args)  # noqa: E731
        signal.connect(slot)
        try:
            trigger()
            wait_until(what, lambda: got, timeout)
        finally:
            signal.disconnect(slot)
        return got

    # -- the day ---------------------------------------------------------------------------------

    def start_and_connect(self) -> None:
        s = self.spec
        start(self.app, url=s["url"], ca_path=s["ca"])
        wait_until("the connect dialog", lambda: self.window.dialog is not None)
        dialog = self.window.dialog
        assert isinstance(dialog, ConnectDialog)
        wait_until("the CA fingerprint", lambda: dialog.fingerprint.text() != "—")
        fingerprint = dialog.fingerprint.text()
        connect_mapped = mapped("Connect to an Enclave appliance")
        self.shot("connect", dialog)
        dialog.confirm.setChecked(True)
        self.signal(self.app.connection.connected, lambda: click(dialog.connect_button), "connected")
        self.record("connect", fingerprint=fingerprint, dialog_mapped=connect_mapped, main_mapped=mapped("^Enclave$"))

    def sign_in(self, username: str, password: str) -> SignInDialog:
        if self.window.banner_action.isVisible() and self.window.banner_action.text() == "Sign in…":
            click(self.window.banner_action)
        else:
            self.window.show_sign_in()
        wait_until("the sign-in dialog", lambda: isinstance(self.window.dialog, SignInDialog))
        dialog = self.window.dialog
        assert isinstance(dialog, SignInDialog)
        dialog.tabs.setCurrentIndex(0)
        dialog.username.clear()
        type_into(dialog.username, username)
        type_into(dialog.password, password)
        self.report.setdefault("keyring_note", dialog.keyring_note.text() if not dialog.keyring_note.isHidden() else "")
        self.signal(self.app.connection.signedIn, lambda: click(dialog.sign_in), f"signed in as {username}")
        return dialog

    def first_sign_in(self) -> None:
        self.sign_in(self.spec["user"], self.spec["password"])
        session = self.app.connection.session
        assert session is not None
        self.record("sign-in", user=session.username, models=session.models,
                    session_only=self.app.connection.credentials.session_only,
                    label=self.window.connection_label.text())

    def index(self) -> None:
        self.signal(self.app.project.indexed, lambda: self.app.project.open(self.spec["project"]), "the index")
        wait_until("the file tree", lambda: self.ws.tree_model.rowCount() > 0)
        self.record("index", files=len(self.app.project.paths), status=self.ws.index_status.text())

    def open(self, rel: str) -> None:
        if rel in self.ws.buffers:
            self.ws.open_file(rel)
        else:
            self.signal(self.app.project.fileLoaded, lambda: self.ws.open_file(rel), f"{rel} loaded")
        wait_until(f"{rel} in the editor", lambda: self.ws.editor.path == rel)

    def ask(self, question: str) -> dict[str, Any]:
        panel = self.ws.panel
        self.ws.side.setCurrentWidget(panel)
        panel.question.clear()
        type_into(panel.question, question)
        paints = Paints(self.app)
        panel.answer.viewport().installEventFilter(paints)
        deltas: list[str] = []
        self.app.generation.delta.connect(deltas.append)
        PacedClient.paints, PacedClient.misses = paints, []
        try:
            self.signal(self.app.generation.finished, lambda: click(panel.send), "the answer", timeout=300)
        finally:
            PacedClient.paints = None
            self.app.generation.delta.disconnect(deltas.append)
            panel.answer.viewport().removeEventFilter(paints)
        final = panel.answer.toPlainText()
        partial = {t for t in paints.texts if t and t != final}
        return {"deltas": len(deltas), "paints": len(paints.texts), "partial_paints": len(partial),
                "missed": list(PacedClient.misses), "pieces": sum(1 for d in deltas if d),
                "answer_chars": len(panel.answer_text), "status": panel.status.text()}

    def ask_and_stream(self) -> None:
        self.open(self.spec["small"])
        seen = self.ask("Explain what this file does, step by step.")
        self.shot("ask")
        self.record("ask", **seen)

    def inline_completion(self) -> None:
        big = self.spec["big"]
        self.open(big)
        editor = self.ws.editor
        failures: list[str] = []
        self.app.completion.failed.connect(lambda n, exc: failures.append(str(exc)))
        size = len(editor.toPlainText())
        accepted = ""
        for attempt, line in enumerate((420, 200, 600, 300, 500)):
            block = editor.document().findBlockByNumber(line)
            cursor = QTextCursor(block)
            cursor.movePosition(QTextCursor.MoveOperation.EndOfBlock)
            editor.setTextCursor(cursor)
            editor.setFocus()
            QTest.keyClick(editor, Qt.Key.Key_Return)
            type_into(editor, "    total = ")
            try:
                wait_until("ghost text", lambda: editor.ghost.strip(), timeout=60)
            except StepFailed:
                continue
            ghost = editor.ghost
            before = editor.toPlainText()
            QTest.keyClick(editor, Qt.Key.Key_Tab)
            after = editor.toPlainText()
            if after != before and ghost in after:
                accepted = ghost
                self.report["completion_attempts"] = attempt + 1
                break
        self.record("completion", file_chars=size, accepted=accepted, failures=failures,
                    context_length=(self.app.connection.session.context_lengths if self.app.connection.session else {}),
                    status=self.window.statusBar().currentMessage())
        # Put the file back as it was, so the next steps see it clean.
        self.signal(self.app.project.fileLoaded, lambda: self.app.project.load(big), "reload")
        self.ws.editor.document().setModified(False)
        self.ws.buffers.pop(big, None)

    def propose_and_apply(self) -> None:
        small = self.spec["small"]
        self.open(small)
        doc = self.ws.editor.document()
        cursor = QTextCursor(doc.findBlockByNumber(self.spec["select"][0] - 1))
        end = doc.findBlockByNumber(self.spec["select"][1] - 1)
        cursor.setPosition(end.position() + end.length() - 1, QTextCursor.MoveMode.KeepAnchor)
        self.ws.editor.setTextCursor(cursor)
        self.ws.panel.question.clear()
        type_into(self.ws.panel.question, "Rewrite the selected function to skip negative quantities.")
        self.signal(self.app.project.contextReady, lambda: click(self.ws.panel.prepare), "the context")
        self.signal(self.app.generation.finished, lambda: click(self.ws.panel.send), "the answer", timeout=300)
        view = self.ws.proposal_view
        self.signal(self.app.edits.proposed, lambda: click(self.ws.panel.propose), "the proposal")
        proposal = view.proposal
        assert proposal is not None
        shown = view.diff.toPlainText()
        self.shot("edit")
        self.signal(self.app.edits.applied, lambda: click(view.apply), "the edit applied")
        on_disk = (Path(self.spec["project"]) / small).read_text()
        self.record("edit", diff_equals_proposal=shown.rstrip("\n") == proposal.diff().rstrip("\n"),
                    shown=shown, diff=proposal.diff(), written=on_disk == proposal.after,
                    changed=on_disk != proposal.before, title=view.title.text())

    def switch_files(self) -> None:
        other, small = self.spec["other"], self.spec["small"]
        self.open(other)
        editor = self.ws.editor
        editor.moveCursor(QTextCursor.MoveOperation.End)
        editor.setFocus()
        type_into(editor, "# typed, not saved\n")
        self.open(small)
        marked = [self.ws.file_tabs.tabText(i) for i in range(self.ws.file_tabs.count())]
        self.open(other)
        kept = editor.toPlainText().endswith("# typed, not saved\n")
        on_disk = (Path(self.spec["project"]) / other).read_text()
        self.record("switch", kept=kept, tabs=marked, unsaved=self.ws.unsaved(),
                    disk_untouched="# typed, not saved" not in on_disk)

    def sign_out(self, step: str = "sign-out") -> None:
        self.signal(self.app.connection.signedOut, self.window.action_sign_out.trigger, "signed out")
        panel = self.ws.panel
        self.record(step, answer=panel.answer.toPlainText(), history=self.ws.history_list.count(),
                    banner=self.window.banner_text.text(), unsaved=self.ws.unsaved())

    def change_password_if_asked(self, new: str) -> bool:
        session = self.app.connection.session
        if session is None or not session.must_change_password:
            return False
        wait_until("the change-password dialog", lambda: isinstance(self.window.dialog, ChangePasswordDialog))
        dialog = self.window.dialog
        assert isinstance(dialog, ChangePasswordDialog)
        QTest.qWait(200)
        self.report.setdefault("password_dialog_mapped", []).append(mapped("Change your password"))
        self.shot("change-password", dialog)
        type_into(dialog.current, self._last_password)
        type_into(dialog.new, new)
        type_into(dialog.confirm, new)
        self.signal(self.app.connection.passwordChanged, lambda: click(dialog.change), "the password changed")
        return True

    def admin_adds_user(self) -> None:
        s = self.spec
        self._last_password = s["admin_password"]
        self.sign_in(s["admin"], s["admin_password"])
        admin_changed = self.change_password_if_asked(s["admin_password"] + "-changed")
        self.window.tabs.setCurrentIndex(self.window.admin_index)
        pages = self.window.admin_pages
        wait_until("the user list", lambda: pages.user_table.rowCount() > 0)
        type_into(pages.new_name, s["new_user"])
        self.signal(self.app.admin.userAdded, lambda: click(pages.add_user), "the user added")
        wait_until("the new user in the list", lambda: any(u["username"] == s["new_user"] for u in pages.users))
        self.shot("admin")
        self.otp = pages.otp.text()
        self.record("admin", admin_had_to_change=admin_changed, otp_shown=bool(self.otp) and not pages.otp_box.isHidden(),
                    users=[u["username"] for u in pages.users])
        self.sign_out("admin-sign-out")
        self.record("admin-cleared", users=pages.user_table.rowCount(), otp=pages.otp.text())
        self.window.tabs.setCurrentIndex(0)

    def new_user_changes_password(self) -> None:
        s = self.spec
        self._last_password = self.otp
        self.sign_in(s["new_user"], self.otp)
        session = self.app.connection.session
        forced = bool(session and session.must_change_password)
        asked = self.change_password_if_asked(s["new_password"])
        session = self.app.connection.session
        wait_until("the dialog to close", lambda: self.window.dialog is None)
        self.record("new-user", forced=forced, changed=asked, user=session.username if session else None,
                    models=session.models if session else [], banner_hidden=self.window.banner.isHidden())

    def run(self) -> int:
        steps = [self.start_and_connect, self.first_sign_in, self.index, self.ask_and_stream, self.inline_completion,
                 self.propose_and_apply, self.switch_files, self.sign_out, self.admin_adds_user,
                 self.new_user_changes_password]
        for step in steps:
            try:
                step()
            except Exception as exc:  # reported with the step's name; the test shows it
                self.report["failed"] = {"step": step.__name__, "error": f"{type(exc).__name__}: {exc}",
                                         "trace": traceback.format_exc()[-3000:]}
                self.report_path.write_text(json.dumps(self.report, indent=1))
                return 1
        return 0

    def close(self) -> None:
        self.ws.buffers.clear()
        self.ws.editor.document().setModified(False)
        self.app.close()


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    QApplication(["enclave-desktop"])
    if QApplication.platformName() != "xcb":
        raise SystemExit(f"not on an X display: Qt's platform is {QApplication.platformName()}")
    day = Day(spec, Path(argv[1]))
    try:
        return day.run()
    finally:
        day.close()


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is closed and the report written; skip the interpreter's teardown, where a binding
    # with PySide6 6.12.0's reference bug aborts (tests/desktop/test_qt_binding.py), no part of the day.
    os._exit(code)
