"""A proposed edit as a diff, with Apply / Undo, and the conflict view when the file changed."""

from __future__ import annotations

from desktop.project.edits import Conflict, Proposal
from desktop.qt import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget, Signal
from desktop.ui.highlighter import DiffHighlighter

__all__ = ["ProposalView"]


class ProposalView(QWidget):
    applyRequested = Signal(object)  # Proposal
    forceRequested = Signal(object)  # Conflict (overwrite anyway)
    reproposeRequested = Signal(object)  # Conflict (rebase the edit on the file as it is now)
    undoRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel("No proposed edit")
        self.title.setWordWrap(True)
        self.diff = QPlainTextEdit()
        self.diff.setReadOnly(True)
        self.diff.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self._hl = DiffHighlighter(self.diff.document())
        self.apply = QPushButton("Apply")
        self.undo = QPushButton("Undo")
        self.overwrite = QPushButton("Overwrite anyway")
        self.repropose = QPushButton("Re-propose on current file")
        self.discard = QPushButton("Discard")
        row = QHBoxLayout()
        for b in (self.apply, self.undo, self.repropose, self.overwrite, self.discard):
            row.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.diff, 1)
        layout.addLayout(row)
        self.proposal: Proposal | None = None
        self.conflict: Conflict | None = None
        self.apply.clicked.connect(self._apply)
        self.undo.clicked.connect(self.undoRequested)
        self.overwrite.clicked.connect(lambda: self.conflict and self.forceRequested.emit(self.conflict))
        self.repropose.clicked.connect(lambda: self.conflict and self.reproposeRequested.emit(self.conflict))
        self.discard.clicked.connect(self.clear)
        self.set_can_undo(False)
        self.clear()

    def _apply(self) -> None:
        if self.proposal is not None:
            self.applyRequested.emit(self.proposal)

    def set_can_undo(self, can: bool) -> None:
        self.undo.setEnabled(can)

    def clear(self) -> None:
        self.proposal = None
        self.conflict = None
        self.title.setText("No proposed edit")
        self.diff.clear()
        self.apply.setEnabled(False)
        self.overwrite.hide()
        self.repropose.hide()

    def show_proposal(self, proposal: Proposal) -> None:
        self.proposal = proposal
        self.conflict = None
        diff = proposal.diff()
        title = f"Proposed edit to {proposal.rel}" if diff else f"The answer leaves {proposal.rel} unchanged"
        self.title.setText(f"{title} ({proposal.note})" if proposal.note else title)
        self.diff.setPlainText(diff)
        self.apply.setEnabled(bool(diff))
        self.overwrite.hide()
        self.repropose.hide()

    def show_applied(self, proposal: Proposal, *, undone: bool = False) -> None:
        self.proposal = None
        self.conflict = None
        self.title.setText(f"{'Restored' if undone else 'Applied to'} {proposal.rel}")
        self.apply.setEnabled(False)
        self.overwrite.hide()
        self.repropose.hide()

    def show_conflict(self, conflict: Conflict) -> None:
        self.conflict = conflict
        self.proposal = None
        what = "undo" if conflict.undoing else "edit"
        self.title.setText(
            f"Conflict: {conflict.proposal.rel} changed on disk since the {what} was prepared. "
            "Nothing was written. Below: what changed on disk."
        )
        self.diff.setPlainText(conflict.diff())
        self.apply.setEnabled(False)
        self.overwrite.show()
        self.repropose.setVisible(not conflict.undoing)
