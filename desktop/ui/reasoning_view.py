"""The model's reasoning (thinking mode), folded above the answer: a header that counts it as it
streams, and the text itself behind that header, shown when the reader unfolds it.

Hidden until the first piece of reasoning arrives, so a non-thinking answer looks as it always did.
"""

from __future__ import annotations

from desktop.qt import QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

__all__ = ["ReasoningView"]


class ReasoningView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.toggle = QPushButton()
        self.toggle.setCheckable(True)
        self.toggle.setFlat(True)
        self.toggle.setObjectName("reasoningToggle")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setObjectName("reasoningText")
        self.text.setMaximumHeight(160)
        self.text.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toggle)
        layout.addWidget(self.text)
        self.toggle.toggled.connect(self._unfold)
        self._streaming = False
        self.clear()

    @property
    def reasoning(self) -> str:
        return self.text.toPlainText()

    @property
    def folded(self) -> bool:
        return not self.toggle.isChecked()

    def start(self) -> None:
        """A new answer: empty, folded, hidden until it reasons."""
        self.clear()
        self._streaming = True

    def append(self, piece: str) -> None:
        self.show()
        cursor = self.text.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(piece)
        self._label()

    def done(self) -> None:
        self._streaming = False
        self._label()

    def clear(self) -> None:
        self._streaming = False
        self.text.clear()
        self.toggle.setChecked(False)
        self.hide()
        self._label()

    def _unfold(self, on: bool) -> None:
        self.text.setVisible(on)
        self._label()

    def _label(self) -> None:
        arrow = "▾" if self.toggle.isChecked() else "▸"
        state = "Thinking…" if self._streaming else "Reasoning"
        self.toggle.setText(f"{arrow} {state} ({len(self.reasoning)} characters)")
