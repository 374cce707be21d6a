"""Proposed edits: a diff to review, apply that refuses to overwrite a file changed since, undo.

Pure file logic, no Qt: :class:`desktop.services.edits.EditService` wraps it for the UI.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from shared.errors import InputError

__all__ = ["Applied", "Conflict", "Proposal", "apply", "code_blocks", "propose", "replace_lines", "undo"]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write(path: Path, text: str) -> None:
    # Whole or not at all: a crash mid-write leaves the old file, never half of the new one.
    tmp = path.with_name(path.name + ".enclave-tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Proposal:
    root: Path
    rel: str
    before: str  # the file as it was when the edit was proposed
    after: str

    @property
    def path(self) -> Path:
        return self.root / self.rel

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True), self.after.splitlines(keepends=True),
                fromfile=f"a/{self.rel}", tofile=f"b/{self.rel}",
            )
        )


@dataclass(frozen=True)
class Applied:
    proposal: Proposal


@dataclass(frozen=True)
class Conflict:
    """The file on disk is neither what the edit was based on nor what it would write."""

    proposal: Proposal
    on_disk: str
    undoing: bool = False

    def diff(self) -> str:
        """What changed on disk since the proposal (base -> disk)."""
        return "".join(
            difflib.unified_diff(
                self.proposal.before.splitlines(keepends=True), self.on_disk.splitlines(keepends=True),
                fromfile=f"proposed-against/{self.proposal.rel}", tofile=f"on-disk/{self.proposal.rel}",
            )
        )


def propose(root: Path, rel: str, after: str) -> Proposal:
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise InputError(f"{rel} is outside the project")
    return Proposal(root.resolve(), rel, _read(path), after)


def apply(proposal: Proposal, *, force: bool = False) -> Applied | Conflict:
    """Write the proposal, unless the file changed on disk since it was proposed (then: Conflict)."""
    on_disk = _read(proposal.path)
    if not force and _sha(on_disk) != _sha(proposal.before):
        return Conflict(proposal, on_disk)
    _write(proposal.path, proposal.after)
    return Applied(proposal)


def undo(applied: Applied, *, force: bool = False) -> Applied | Conflict:
    """Restore the file as it was before ``applied``, unless it was edited again since."""
    p = applied.proposal
    on_disk = _read(p.path)
    if not force and _sha(on_disk) != _sha(p.after):
        return Conflict(Proposal(p.root, p.rel, p.after, p.before), on_disk, undoing=True)
    _write(p.path, p.before)
    return Applied(Proposal(p.root, p.rel, p.after, p.before))


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced code blocks in an answer, in order (an unclosed last one counts)."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in markdown.split("\n"):
        if line.lstrip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def replace_lines(text: str, selection: tuple[int, int] | None, replacement: str) -> str:
    """``text`` with lines ``selection`` (1-based, inclusive) replaced; the whole text without one."""
    if selection is None:
        return replacement if replacement.endswith("\n") or not text.endswith("\n") else replacement + "\n"
    lines = text.split("\n")
    start, end = selection
    return "\n".join([*lines[: start - 1], *replacement.split("\n"), *lines[end:]])
