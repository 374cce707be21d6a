"""Proposed edits: a diff to review, apply that refuses to overwrite a file changed since, undo.

Pure file logic, no Qt: :class:`desktop.services.edits.EditService` wraps it for the UI.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from desktop.project.extract import code_blocks
from shared.errors import InputError

__all__ = ["Applied", "Conflict", "Proposal", "apply", "code_blocks", "propose", "replace_lines", "undo",
           "unified_diff"]


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


def _lines(text: str) -> list[str]:
    # Lines as files and `git diff` count them: split at "\n" only (str.splitlines also splits at
    # form feeds, lone carriage returns and more, which made the preview's hunks disagree with the file).
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    return [*out, lines[-1]] if lines[-1] else out


def _marked(diff: Iterator[str]) -> Iterator[str]:
    for line in diff:
        if line.endswith("\n"):
            yield line
        else:  # a last line without a newline, marked the way diff and git apply expect
            yield line + "\n\\ No newline at end of file\n"


def unified_diff(before: str, after: str, fromfile: str, tofile: str) -> str:
    """A unified diff that ``git apply`` turns ``before`` into ``after`` with, byte for byte."""
    return "".join(_marked(difflib.unified_diff(_lines(before), _lines(after), fromfile=fromfile, tofile=tofile)))


def _controls(text: str) -> set[str]:
    return {c for c in text if c not in "\t\n" and unicodedata.category(c) == "Cc"}


@dataclass(frozen=True)
class Proposal:
    root: Path
    rel: str
    before: str  # the file as it was when the edit was proposed
    after: str
    note: str = ""  # how the change was taken from the answer, for the user

    @property
    def path(self) -> Path:
        return self.root / self.rel

    def diff(self) -> str:
        """Exactly the change :func:`apply` writes."""
        return unified_diff(self.before, self.after, f"a/{self.rel}", f"b/{self.rel}")


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
        return unified_diff(self.proposal.before, self.on_disk, f"proposed-against/{self.proposal.rel}",
                            f"on-disk/{self.proposal.rel}")


def propose(root: Path, rel: str, after: str) -> Proposal:
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise InputError(f"{rel} is outside the project")
    return Proposal(root.resolve(), rel, _read(path), after)


def apply(proposal: Proposal, *, force: bool = False) -> Applied | Conflict:
    """Write the proposal, unless the file changed on disk since it was proposed (then: Conflict)."""
    added = sorted(_controls(proposal.after) - _controls(proposal.before))
    if added:
        names = ", ".join(f"U+{ord(c):04X}" for c in added)
        raise InputError(f"the edit to {proposal.rel} would add control characters ({names}); nothing was written")
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


def replace_lines(text: str, selection: tuple[int, int] | None, replacement: str) -> str:
    """``text`` with lines ``selection`` (1-based, inclusive) replaced; the whole text without one."""
    if selection is None:
        return replacement if replacement.endswith("\n") or not text.endswith("\n") else replacement + "\n"
    lines = text.split("\n")
    start, end = selection
    return "\n".join([*lines[: start - 1], *replacement.split("\n"), *lines[end:]])
