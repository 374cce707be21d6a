"""Proposed edits for the UI: apply, undo (a stack), and conflicts reported instead of overwrites."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from desktop.project.edits import Applied, Conflict, Proposal, apply, propose, replace_lines, undo
from desktop.project.extract import extract_code, indent_of
from desktop.qt import QObject, Signal
from shared.errors import EnclaveError, InputError

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

    def propose(self, root: Path, rel: str, selection: tuple[int, int] | None, answer: str) -> None:
        """An edit replacing ``selection`` of the file (the whole file without one) with the code of
        ``answer``, re-indented to the selection's first line."""
        try:
            base = propose(root, rel, "")
        except EnclaveError as exc:
            self.failed.emit(exc)
            return
        lines = base.before.split("\n")
        if selection is not None and not 1 <= selection[0] <= selection[1] <= len(lines):
            self.failed.emit(InputError(f"lines {selection[0]}-{selection[1]} are no longer in {rel}; "
                                        "select the code to change and ask again"))
            return
        indent = indent_of(lines[selection[0] - 1]) if selection is not None else None
        extracted = extract_code(answer, path=rel, indent=indent)
        after = replace_lines(base.before, selection, extracted.code)
        self.proposed.emit(dataclasses.replace(base, after=after, note=extracted.note()))

    def repropose(self, conflict: Conflict, selection: tuple[int, int] | None, answer: str) -> None:
        """The same edit, based on the file as it is on disk now."""
        self.propose(conflict.proposal.root, conflict.proposal.rel, selection, answer)

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
