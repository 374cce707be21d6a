"""Context assembly: which lines of which files go with a question, within a token budget.

Sources, in order of priority (each has a share of the budget; what one leaves unused flows on):

=============  =====  ==============================================================
selection      40 %   the lines the user selected
cursor         25 %   the current file around the cursor (the editor's buffer, saved or not)
definition     20 %   definitions of the symbols used in view (``ast`` for Python)
search         rest   best full-text (FTS5/bm25) hits for the question and the selection
recent         rest   the start of recently edited files
=============  =====  ==============================================================

The result lists every file and line range used, so the user sees (and can remove) exactly what
will be sent. Token counts are estimated at four characters a token: the client has no tokenizer,
and a budget only needs to be close.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from desktop.project.ignore import IgnoreRules
from desktop.project.index import ProjectIndex
from desktop.project.scan import read_text
from desktop.project.symbols import definition_end, identifiers, language_of, python_names_in_view

__all__ = ["Context", "ContextItem", "ContextRequest", "assemble", "estimate_tokens", "sendable"]

_SHARES = {"selection": 0.40, "cursor": 0.25, "definition": 0.20}
_MAX_DEF_LINES = 60
_RECENT_LINES = 40


def estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4


@dataclass(frozen=True)
class ContextRequest:
    question: str
    current_path: str | None = None
    current_text: str | None = None  # the editor buffer; None reads the file from disk
    cursor_line: int = 1
    selection: tuple[int, int] | None = None  # 1-based inclusive line range
    visible: tuple[int, int] | None = None
    recent_paths: Sequence[str] = ()
    # Other open editor buffers (rel path -> text), read instead of the files on disk.
    buffers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContextItem:
    path: str
    start_line: int
    end_line: int
    reason: str
    text: str
    sha256: str  # of the whole file the lines come from, as sent in the ``enclave`` metadata

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.text)

    @property
    def label(self) -> str:
        return f"{self.path}:{self.start_line}-{self.end_line} ({self.reason})"


@dataclass
class Context:
    budget: int
    items: list[ContextItem] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(i.tokens for i in self.items)

    def without(self, index: int) -> Context:
        return Context(self.budget, [it for i, it in enumerate(self.items) if i != index])

    def fit(self, budget: int) -> Context:
        """The items that fit in ``budget``, highest priority first (the order they were chosen in)."""
        kept: list[ContextItem] = []
        used = 0
        for item in self.items:
            if used + item.tokens <= budget:
                kept.append(item)
                used += item.tokens
        return Context(budget, kept)

    def render(self) -> str:
        """The context as a prompt section, one fenced block per item."""
        parts = []
        for it in self.items:
            lang = language_of(it.path) or ""
            parts.append(f"File {it.path}, lines {it.start_line}-{it.end_line}:\n```{lang}\n{it.text}\n```")
        return "\n\n".join(parts)

    def files(self) -> list[tuple[str, str]]:
        """(path, sha256) of every file used, once each, in order."""
        return list(dict.fromkeys((it.path, it.sha256) for it in self.items))


class _Assembler:
    def __init__(self, index: ProjectIndex, request: ContextRequest, budget: int) -> None:
        self.index = index
        self.request = request
        self.context = Context(budget)
        self.remaining = budget
        self._texts: dict[str, tuple[list[str], str] | None] = {}
        self._covered: dict[str, list[tuple[int, int]]] = {}

    def lines_of(self, path: str) -> tuple[list[str], str] | None:
        if path not in self._texts:
            r = self.request
            if path == r.current_path and r.current_text is not None:
                text: str | None = r.current_text
            elif path in r.buffers:
                text = r.buffers[path]
            else:
                text = read_text(self.index.root / path)
            if text is None:
                self._texts[path] = None
            else:
                sha = self.index.file_sha256(path) if path != r.current_path and path not in r.buffers else None
                sha = sha or hashlib.sha256(text.encode()).hexdigest()
                self._texts[path] = (text.split("\n"), sha)
        return self._texts[path]

    def uncovered(self, path: str, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of start..end not already in the context (nothing is sent twice)."""
        segments = [(start, end)]
        for s, e in self._covered.get(path, []):
            next_segments = []
            for a, b in segments:
                if e < a or s > b:
                    next_segments.append((a, b))
                    continue
                if a < s:
                    next_segments.append((a, s - 1))
                if e < b:
                    next_segments.append((e + 1, b))
            segments = next_segments
        return segments

    def add(self, path: str, start: int, end: int, reason: str, cap: int) -> int:
        """Add what is new in lines start..end of path, within ``cap`` tokens; returns tokens used."""
        got = self.lines_of(path)
        if got is None:
            return 0
        lines, sha = got
        start = max(1, start)
        end = min(len(lines), end)
        used = 0
        for s, e in self.uncovered(path, start, end):
            used += self._add_segment(path, lines, sha, s, e, reason, cap - used)
        return used

    def _add_segment(self, path: str, lines: list[str], sha: str, start: int, end: int, reason: str, cap: int) -> int:
        cap = min(cap, self.remaining)
        # Drop lines from the end until it fits; a range that cannot fit even one line is skipped.
        text = "\n".join(lines[start - 1 : end])
        while estimate_tokens(text) > cap and end > start:
            end = start + (end - start) * 3 // 4 if end - start > 8 else end - 1
            text = "\n".join(lines[start - 1 : end])
        if estimate_tokens(text) > cap or not text.strip():
            return 0
        item = ContextItem(path, start, end, reason, text, sha)
        self.context.items.append(item)
        self._covered.setdefault(path, []).append((start, end))
        self.remaining -= item.tokens
        return item.tokens

    def window(self, path: str, center: int, cap: int, reason: str) -> None:
        got = self.lines_of(path)
        if got is None:
            return
        lines = got[0]
        lo = hi = max(1, min(center, len(lines)))
        used = estimate_tokens(lines[lo - 1])
        # Grow both ways a line at a time, so the cursor stays in the middle of what is sent.
        while used < min(cap, self.remaining) and (lo > 1 or hi < len(lines)):
            grew = False
            for side in (-1, 1):
                if side < 0 and lo > 1:
                    cost = estimate_tokens(lines[lo - 2]) + 1
                    if used + cost <= cap:
                        lo, used, grew = lo - 1, used + cost, True
                elif side > 0 and hi < len(lines):
                    cost = estimate_tokens(lines[hi]) + 1
                    if used + cost <= cap:
                        hi, used, grew = hi + 1, used + cost, True
            if not grew:
                break
        self.add(path, lo, hi, reason, cap)

    def names_in_view(self) -> list[str]:
        r = self.request
        names: list[str] = []
        if r.current_path and (got := self.lines_of(r.current_path)):
            lines = got[0]
            first, last = r.visible or r.selection or (max(1, r.cursor_line - 20), r.cursor_line + 20)
            if r.current_path.endswith((".py", ".pyi")):
                found = python_names_in_view(lines, first, last)
                if found is not None:
                    names = found
            if not names:
                names = identifiers("\n".join(lines[first - 1 : last]))
        return list(dict.fromkeys([*identifiers(r.question), *names]))

    def run(self) -> Context:
        r = self.request
        budget = self.context.budget
        if r.current_path and r.selection:
            self.add(r.current_path, r.selection[0], r.selection[1], "selection", int(budget * _SHARES["selection"]))
        if r.current_path:
            self.window(r.current_path, r.cursor_line, int(budget * _SHARES["cursor"]), "cursor")
        def_cap = int(budget * _SHARES["definition"])
        for hit in self.index.definitions(self.names_in_view()[:40], limit=12):
            if def_cap <= 0:
                break
            got = self.lines_of(hit.path)
            if got is None:
                continue
            end = min(definition_end(hit.path, got[0], hit.line), hit.line + _MAX_DEF_LINES - 1)
            def_cap -= self.add(hit.path, hit.line, end, "definition", def_cap)
        query = r.question
        if r.current_path and r.selection and (got := self.lines_of(r.current_path)):
            query += " " + " ".join(identifiers("\n".join(got[0][r.selection[0] - 1 : r.selection[1]]))[:6])
        recent = [p for p in r.recent_paths if p != r.current_path][:3]
        reserve = min(self.remaining // 4, len(recent) * 200)
        for found in self.index.search(query, limit=6, with_text=False):
            if self.remaining <= reserve:
                break
            self.add(found.path, found.start_line, found.end_line, "search", self.remaining - reserve)
        for path in recent:
            self.add(path, 1, _RECENT_LINES, "recent", self.remaining)
        return self.context


def assemble(index: ProjectIndex, request: ContextRequest, *, budget: int = 3000) -> Context:
    """The context for ``request`` from ``index`` within ``budget`` (estimated) tokens."""
    if request.current_path is not None and Path(request.current_path).is_absolute():
        request = replace(request, current_path=Path(request.current_path).resolve().relative_to(index.root).as_posix())
    return _Assembler(index, request, budget).run()


def sendable(context: Context, rules: IgnoreRules) -> Context:
    """``context`` without the items whose file must never leave the machine (secrets, policy
    exclusions): the index never holds them, but the current file, open buffers and recent files
    come from the editor or the disk, so the assembled context is checked once more."""
    return Context(context.budget, [item for item in context.items if not rules.never_sent(item.path)])
