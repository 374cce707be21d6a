"""The code editor: line numbers, auto-indent, syntax highlighting and inline (fill-in-the-middle)
completion as ghost text.

Completion: only after the user types and pauses (never on opening a file), ``completionWanted``
asks for text to insert at the cursor; the answer shows in grey after the cursor — only where
nothing follows the cursor on its line, so it is never drawn over code, and a multi-line answer
shows its first line and how many more come. Tab accepts it all, Esc dismisses it, and any other
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
    QRect,
    QResizeEvent,
    QSize,
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
        self.setTabStopDistance(4 * self.fontMetrics().horizontalAdvance(" "))
        self.line_numbers = _LineNumbers(self)
        self.blockCountChanged.connect(self._gutter_width)
        self.updateRequest.connect(self._gutter_scroll)
        self._gutter_width()

    # -- line numbers ----------------------------------------------------------------------------

    def gutter_width(self) -> int:
        digits = len(str(max(1, self.blockCount())))
        return 10 + self.fontMetrics().horizontalAdvance("9") * max(3, digits)

    def _gutter_width(self) -> None:
        self.setViewportMargins(self.gutter_width(), 0, 0, 0)

    def _gutter_scroll(self, rect: QRect, dy: int) -> None:
        if dy:
            self.line_numbers.scroll(0, dy)
        else:
            self.line_numbers.update(0, rect.y(), self.line_numbers.width(), rect.height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        r = self.contentsRect()
        self.line_numbers.setGeometry(QRect(r.left(), r.top(), self.gutter_width(), r.height()))

    def paint_line_numbers(self, event: QPaintEvent) -> None:
        painter = QPainter(self.line_numbers)
        painter.fillRect(event.rect(), QColor("#f3f3f3"))
        painter.setPen(QColor("#8a8a8a"))
        block = self.firstVisibleBlock()
        top = round(self.blockBoundingGeometry(block).translated(self.contentOffset()).top())
        height = self.fontMetrics().height()
        while block.isValid() and top <= event.rect().bottom():
            bottom = top + round(self.blockBoundingRect(block).height())
            if block.isVisible() and bottom >= event.rect().top():
                painter.drawText(0, top, self.line_numbers.width() - 5, height,
                                 int(Qt.AlignmentFlag.AlignRight), str(block.blockNumber() + 1))
            block = block.next()
            top = bottom
        painter.end()

    # -- text ------------------------------------------------------------------------------------

    def open_text(self, path: str, text: str) -> None:
        self._timer.stop()  # a pause in the previous file must not ask for a completion in this one
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
        cursor = self.textCursor()
        if cursor.block().text()[cursor.positionInBlock():].strip():
            return  # code follows the cursor on this line: ghost text would be drawn over it
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
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not event.modifiers():
            # Auto-indent: the new line starts with the previous line's indentation (one level more
            # after a line ending in ":" or an opening bracket).
            line = self.textCursor().block().text()[: self.textCursor().positionInBlock()]
            indent = line[: len(line) - len(line.lstrip(" \t"))]
            if line.rstrip().endswith((":", "{", "(", "[")):
                indent += "\t" if indent.startswith("\t") else "    "
            self.textCursor().insertText("\n" + indent)
            self.ensureCursorVisible()
            self._timer.stop()
            return
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
        # Only to the right of the cursor, on its own line: lines below hold code and stay readable.
        first, *more = self.ghost.split("\n")
        hint = f"  … +{len(more)} more line{'s' if len(more) > 1 else ''} (Tab)" if more else ""
        painter.drawText(rect.right() + 1, rect.top() + metrics.ascent(), first.replace("\t", "    ") + hint)
        painter.end()


class _LineNumbers(QWidget):
    def __init__(self, editor: CodeEditor) -> None:
        super().__init__(editor)
        self._editor = editor

    def sizeHint(self) -> QSize:
        return QSize(self._editor.gutter_width(), 0)

    def paintEvent(self, event: QPaintEvent) -> None:
        self._editor.paint_line_numbers(event)
