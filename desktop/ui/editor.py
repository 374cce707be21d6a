"""The code editor: syntax highlighting and inline (fill-in-the-middle) completion as ghost text.

Completion: after the user pauses typing, ``completionWanted`` asks for text to insert at the
cursor; the answer shows in grey after the cursor. Tab accepts it, Esc dismisses it, and any other
key (or moving the cursor) cancels it — the request number moves on, so a late answer is ignored.
"""

from __future__ import annotations

from desktop.qt import (
    QColor,
    QFontDatabase,
    QKeyEvent,
    QPainter,
    QPaintEvent,
    QPlainTextEdit,
    Qt,
    QTimer,
    QWidget,
    Signal,
)
from desktop.ui.highlighter import CodeHighlighter

__all__ = ["CodeEditor"]


class CodeEditor(QPlainTextEdit):
    completionWanted = Signal(int, str, str)  # request number, prefix, suffix
    completionCancelled = Signal()

    def __init__(self, parent: QWidget | None = None, *, pause_ms: int = 600) -> None:
        super().__init__(parent)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.highlighter = CodeHighlighter(self.document())
        self.path = ""
        self.completion_enabled = False
        self.ghost = ""
        self._ghost_pos = -1
        self._number = 0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(pause_ms)
        self._timer.timeout.connect(self._want_completion)
        self.cursorPositionChanged.connect(self._cursor_moved)

    def open_text(self, path: str, text: str) -> None:
        self.dismiss()
        self.path = path
        self.highlighter.set_path(path)
        self.setPlainText(text)
        self.document().setModified(False)

    # -- selection / view, for context assembly --------------------------------------------------

    def cursor_line(self) -> int:
        return self.textCursor().blockNumber() + 1

    def selected_lines(self) -> tuple[int, int] | None:
        cursor = self.textCursor()
        if not cursor.hasSelection():
            return None
        doc = self.document()
        first = doc.findBlock(cursor.selectionStart()).blockNumber() + 1
        last_pos = max(cursor.selectionStart(), cursor.selectionEnd() - 1)
        last = doc.findBlock(last_pos).blockNumber() + 1
        return first, last

    def visible_lines(self) -> tuple[int, int]:
        first = self.firstVisibleBlock().blockNumber() + 1
        rows = max(1, self.viewport().height() // max(1, self.fontMetrics().lineSpacing()))
        return first, min(self.blockCount(), first + rows)

    # -- completion ------------------------------------------------------------------------------

    def _want_completion(self) -> None:
        if not self.completion_enabled or self.textCursor().hasSelection():
            return
        text = self.toPlainText()
        pos = self.textCursor().position()
        self.completionWanted.emit(self._number, text[:pos], text[pos:])

    def show_completion(self, number: int, text: str) -> None:
        """Show ``text`` as ghost text if it answers the newest request and the cursor has not moved."""
        if number != self._number or not text:
            return
        self.ghost = text
        self._ghost_pos = self.textCursor().position()
        self.viewport().update()

    def dismiss(self) -> None:
        had = bool(self.ghost)
        self.ghost = ""
        self._ghost_pos = -1
        self._number += 1
        if had:
            self.viewport().update()
        self.completionCancelled.emit()

    def accept_completion(self) -> None:
        text = self.ghost
        self.ghost = ""
        self._ghost_pos = -1
        self.textCursor().insertText(text)
        self.viewport().update()

    def _cursor_moved(self) -> None:
        if self.ghost and self.textCursor().position() != self._ghost_pos:
            self.dismiss()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if self.ghost and event.key() == Qt.Key.Key_Tab:
            self.accept_completion()
            return
        if self.ghost and event.key() == Qt.Key.Key_Escape:
            self.dismiss()
            return
        self.dismiss()  # typing on cancels what was asked and what was shown
        super().keyPressEvent(event)
        if self.completion_enabled and event.text():
            self._timer.start()

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if not self.ghost:
            return
        painter = QPainter(self.viewport())
        painter.setPen(QColor("#9a9a9a"))
        rect = self.cursorRect()
        metrics = self.fontMetrics()
        x0 = self.contentOffset().x() + self.document().documentMargin()
        for i, line in enumerate(self.ghost.split("\n")):
            x = rect.right() + 1 if i == 0 else int(x0)
            y = rect.top() + metrics.ascent() + i * metrics.lineSpacing()
            painter.drawText(x, y, line)
        painter.end()
