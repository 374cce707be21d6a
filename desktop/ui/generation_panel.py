"""The generation panel: the question, the context that will be sent (removable item by item),
the streamed answer with code blocks rendered, and a button to turn the answer into an edit."""

from __future__ import annotations

from desktop.project.context import Context
from desktop.project.history import HistoryEntry
from desktop.qt import (
    QCheckBox,
    QHBoxLayout,
    QKeyEvent,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    Qt,
    QTextBrowser,
    QTimer,
    QVBoxLayout,
    QWidget,
    Signal,
)
from desktop.ui.reasoning_view import ReasoningView

__all__ = ["ContextList", "GenerationPanel"]


class ContextList(QListWidget):
    """The context items; Delete (or the Remove button) takes the selected ones out."""

    removed = Signal(int)

    def show_context(self, context: Context) -> None:
        self.clear()
        for item in context.items:
            row = QListWidgetItem(f"{item.label} · ~{item.tokens} tokens")
            row.setToolTip(item.text[:2000])
            self.addItem(row)

    def remove_selected(self) -> None:
        for row in sorted((self.row(i) for i in self.selectedItems()), reverse=True):
            self.removed.emit(row)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.remove_selected()
            return
        super().keyPressEvent(event)


class GenerationPanel(QWidget):
    askRequested = Signal(str)
    sendRequested = Signal(str)
    stopRequested = Signal()
    proposeRequested = Signal(str)  # the answer

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.question = QPlainTextEdit()
        self.question.setPlaceholderText("Ask about the code; select lines in the editor to focus on them")
        self.question.setMaximumHeight(90)
        self.prepare = QPushButton("Gather context")
        self.send = QPushButton("Send")
        self.stop = QPushButton("Stop")
        self.stop.setEnabled(False)
        # Thinking mode: the model reasons before it answers (slower, better on hard code).
        self.think = QCheckBox("Think first")
        self.context_list = ContextList()
        self.context_list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.remove = QPushButton("Remove from context")
        self.context_summary = QLabel("No context yet")
        # What the budget took out of the list, and why (the list above is exactly what is sent).
        self.dropped = QLabel("")
        self.dropped.setObjectName("dropped")
        self.dropped.setWordWrap(True)
        self.dropped.setStyleSheet("color: #8a5300")
        self.dropped.hide()
        self.reasoning = ReasoningView()
        self.answer = QTextBrowser()
        self.answer.setOpenExternalLinks(False)
        self.propose = QPushButton("Propose as edit")
        self.propose.setEnabled(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setObjectName("status")
        buttons = QHBoxLayout()
        buttons.addWidget(self.prepare)
        buttons.addWidget(self.send)
        buttons.addWidget(self.stop)
        buttons.addWidget(self.think)
        ctx_row = QHBoxLayout()
        ctx_row.addWidget(self.context_summary, 1)
        ctx_row.addWidget(self.remove)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Question"))
        layout.addWidget(self.question)
        layout.addLayout(buttons)
        layout.addLayout(ctx_row)
        layout.addWidget(self.dropped)
        layout.addWidget(self.context_list, 1)
        layout.addWidget(QLabel("Answer"))
        layout.addWidget(self.reasoning)
        layout.addWidget(self.answer, 2)
        layout.addWidget(self.propose)
        layout.addWidget(self.status)
        self._answer_text = ""
        # Pieces arrive faster than a screen refreshes: each batch is rendered once, then painted
        # before the next batch is handled (a zero timer runs after the queued pieces, and the paint
        # it asks for comes before the pieces queued after it).
        self._render = QTimer(self)
        self._render.setSingleShot(True)
        self._render.setInterval(0)
        self._render.timeout.connect(self._render_answer)
        self.rendered = 0  # answer renders during this stream (tests and the stream bench read it)
        self.rendered_text = ""  # the answer as last rendered (what the next paint shows)
        self.prepare.clicked.connect(lambda: self.askRequested.emit(self.question.toPlainText()))
        self.send.clicked.connect(lambda: self.sendRequested.emit(self.question.toPlainText()))
        self.stop.clicked.connect(self.stopRequested)
        self.remove.clicked.connect(self.context_list.remove_selected)
        self.propose.clicked.connect(lambda: self.proposeRequested.emit(self._answer_text))

    @property
    def answer_text(self) -> str:
        return self._answer_text

    def show_dropped(self, labels: list[str], why: str) -> None:
        if not labels:
            self.dropped.hide()
            return
        self.dropped.setText(f"Dropped from the context ({why}): " + ", ".join(labels))
        self.dropped.show()

    def show_context(self, context: Context) -> None:
        self.dropped.hide()
        self.context_list.show_context(context)
        files = len({i.path for i in context.items})
        self.context_summary.setText(f"{len(context.items)} items from {files} files, ~{context.tokens} of {context.budget} tokens")

    def streaming(self, on: bool) -> None:
        self.stop.setEnabled(on)
        self.send.setEnabled(not on)
        self.prepare.setEnabled(not on)
        if on:
            self._answer_text = ""
            self.rendered = 0
            self.answer.clear()
            self.reasoning.start()
            self.propose.setEnabled(False)
            self.status.setText("Answering…")
        else:
            self.reasoning.done()

    def append_reasoning(self, text: str) -> None:
        self.reasoning.append(text)

    def append(self, text: str) -> None:
        self._answer_text += text
        if not self._render.isActive():
            self._render.start()

    def _render_answer(self) -> None:
        self._render.stop()
        bar = self.answer.verticalScrollBar()
        following = bar.value() >= bar.maximum() - 4  # the reader is at the end: keep the new text in view
        # Re-rendering the Markdown keeps fenced code blocks rendered as they grow.
        self.answer.setMarkdown(self._answer_text)
        self.rendered_text = self._answer_text
        self.rendered += 1
        if following:
            bar.setValue(bar.maximum())

    def clear(self) -> None:
        """Empty: no question, answer, context or message (after a sign-out)."""
        self._render.stop()
        self.streaming(False)
        self._answer_text = ""
        self.question.clear()
        self.answer.clear()
        self.reasoning.clear()
        self.context_list.clear()
        self.context_summary.setText("No context yet")
        self.dropped.hide()
        self.propose.setEnabled(False)
        self.status.setText("")

    def show_history(self, entry: HistoryEntry) -> None:
        """A past question and its answer, as it was (it can be proposed as an edit again)."""
        self._render.stop()
        self.question.setPlainText(entry.question)
        self._answer_text = entry.answer
        self.reasoning.clear()
        self.answer.setMarkdown(entry.answer)
        self.context_list.clear()
        for label in entry.context:
            self.context_list.addItem(label)
        n = len(entry.context)
        self.context_summary.setText(f"{n} item{'s' if n != 1 else ''} were sent with this question")
        self.dropped.hide()
        self.propose.setEnabled(bool(entry.answer.strip()))
        self.status.setText(f"From the history: asked {entry.at:%Y-%m-%d %H:%M} of {entry.model}. "
                            "Send asks again with fresh context.")

    def finished(self, usage: dict[str, int] | None) -> None:
        if self._render.isActive():
            self._render_answer()
        self.streaming(False)
        self.propose.setEnabled(bool(self._answer_text.strip()))
        tokens = f" ({usage.get('completion_tokens', 0)} tokens)" if usage else ""
        self.status.setText(f"Done{tokens}.")

    def show_error(self, message: str) -> None:
        if self._render.isActive():
            self._render_answer()
        self.streaming(False)
        self.propose.setEnabled(bool(self._answer_text.strip()))
        self.status.setText(message)
