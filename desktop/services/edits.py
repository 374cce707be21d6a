"""Proposed edits for the UI: apply, undo (a stack), and conflicts reported instead of overwrites."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from desktop.project.edits import Applied, Conflict, Proposal, apply, propose, replace_lines, undo
from desktop.qt import QObject, Signal
from shared.errors import EnclaveError

__all__ = ["EditService"]


class EditService(QObject):
    proposed = Signal(object)  # Proposal
    applied = Signal(object)  # Proposal
    undone = Signal(object)  # Proposal (the restoring one)
    conflict = Signal(object)  # Conflict
    failed = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._done: list[Applied] = []

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    def propose(self, root: Path, rel: str, selection: tuple[int, int] | None, code: str) -> None:
        """An edit replacing ``selection`` of the file (the whole file without one) with ``code``."""
        try:
            base = propose(root, rel, "")
        except EnclaveError as exc:
            self.failed.emit(exc)
            return
        self.proposed.emit(dataclasses.replace(base, after=replace_lines(base.before, selection, code)))

    def repropose(self, conflict: Conflict, selection: tuple[int, int] | None, code: str) -> None:
        """The same edit, based on the file as it is on disk now."""
        self.propose(conflict.proposal.root, conflict.proposal.rel, selection, code)

    # Files are small and the write must be ordered with the user's next action, so these run on the
    # calling thread; they touch only one file each.
    def apply(self, proposal: Proposal, *, force: bool = False) -> None:
        try:
            result = apply(proposal, force=force)
        except EnclaveError as exc:
            self.failed.emit(exc)
            return
        if isinstance(result, Conflict):
            self.conflict.emit(result)
        else:
            self._done.append(result)
            self.applied.emit(result.proposal)

    def undo(self, *, force: bool = False) -> None:
        if not self._done:
            return
        try:
            result = undo(self._done[-1], force=force)
        except EnclaveError as exc:
            self.failed.emit(exc)
            return
        if isinstance(result, Conflict):
            self.conflict.emit(result)
        else:
            self._done.pop()
            self.undone.emit(result.proposal)
