"""Issue #15 failure 8: switching files keeps unsaved edits (per-file buffers, a ● on the tab), closing a
modified file asks first; the editor has line numbers and auto-indent."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from desktop.app import App
from desktop.qt import Qt
from tests.helpers.desktop_flows import open_file, open_project


def _tabs(app: App) -> list[str]:
    bar = app.window.workspace.file_tabs
    return [bar.tabText(i) for i in range(bar.count())]


def test_switching_files_keeps_unsaved_edits(qtbot: QtBot, signed_in: App, fixture_project: Path) -> None:
    app = signed_in
    ws = app.window.workspace
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/cart.py")
    editor = ws.editor
    editor.moveCursor(editor.textCursor().MoveOperation.End)
    qtbot.keyClicks(editor, "# my unsaved note")
    assert _tabs(app) == ["● cart.py"]
    open_file(qtbot, app, "src/shop/prices.py")
    assert _tabs(app) == ["● cart.py", "prices.py"] and ws.unsaved() == ["src/shop/cart.py"]
    ws.open_file("src/shop/cart.py")  # from its buffer, not from disk
    assert editor.path == "src/shop/cart.py" and editor.toPlainText().endswith("# my unsaved note")
    assert editor.document().isModified()
    assert "# my unsaved note" not in (fixture_project / "src/shop/cart.py").read_text()

    asked: list[list[str]] = []
    ws.confirm_discard = lambda paths: asked.append(paths) or "cancel"
    assert not ws.close_tab(0) and asked == [["src/shop/cart.py"]] and ws.unsaved() == ["src/shop/cart.py"]
    ws.confirm_discard = lambda paths: "save"
    with qtbot.waitSignal(app.project.pathsChanged, timeout=20_000, raising=False):
        assert ws.close_tab(0)
    qtbot.waitUntil(lambda: "# my unsaved note" in (fixture_project / "src/shop/cart.py").read_text(), timeout=20_000)
    assert _tabs(app) == ["prices.py"] and ws.unsaved() == []


def test_line_numbers_and_auto_indent(qtbot: QtBot, signed_in: App, fixture_project: Path) -> None:
    app = signed_in
    ws = app.window.workspace
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/cart.py")
    editor = ws.editor
    assert editor.line_numbers.width() > 0 and editor.viewportMargins().left() == editor.gutter_width()
    block = editor.document().findBlockByNumber(9)  # "    def add(self, sku: str, quantity: int) -> None:"
    cursor = editor.textCursor()
    cursor.setPosition(block.position() + block.length() - 1)
    editor.setTextCursor(cursor)
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    assert editor.textCursor().block().text() == " " * 8
    qtbot.keyClicks(editor, "pass")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    assert editor.textCursor().block().text() == " " * 8
