from __future__ import annotations

from pytestqt.qtbot import QtBot

from desktop.qt import QFont
from desktop.ui.editor import CodeEditor


def _formats(editor: CodeEditor, line: int) -> dict[int, tuple[str, bool, bool]]:
    block = editor.document().findBlockByNumber(line)
    return {
        r.start: (r.format.foreground().color().name(), r.format.fontWeight() == QFont.Weight.Bold, r.format.fontItalic())
        for r in block.layout().formats()
    }


def test_highlighting_follows_the_language(qtbot: QtBot) -> None:
    editor = CodeEditor()
    qtbot.addWidget(editor)
    editor.open_text("a.py", "def f(x):\n    return 'hi'  # note\n")
    first = _formats(editor, 0)
    assert first[0][1]  # "def" in bold
    second = _formats(editor, 1)
    assert any(italic for _, _, italic in second.values())  # the comment
    assert len({color for color, _, _ in second.values()}) >= 3  # keyword, string, comment differ
    editor.open_text("notes.txt", "def f(x): return 1  # not code\n")
    assert not any(bold or italic for _, bold, italic in _formats(editor, 0).values())


def test_selection_and_cursor_lines(qtbot: QtBot) -> None:
    editor = CodeEditor()
    qtbot.addWidget(editor)
    editor.open_text("a.py", "one\ntwo\nthree\nfour\n")
    cursor = editor.textCursor()
    cursor.setPosition(editor.document().findBlockByNumber(1).position())
    cursor.setPosition(editor.document().findBlockByNumber(3).position(), cursor.MoveMode.KeepAnchor)
    editor.setTextCursor(cursor)
    # A selection that ends at the start of a line does not include that line.
    assert editor.selected_lines() == (2, 3)
    assert editor.cursor_line() == 4
