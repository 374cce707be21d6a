"""The editor's workspace as an Enclave project: the desktop client's index (same cache file for
the same folder), its scan rules and the appliance's policy exclusions, and context assembly over
the index and the editor's open buffers.

A file that must never leave the machine (a secret, or excluded by the appliance's policy) is
never completed in and never used as context, whether it is on disk, in the index or open in the
editor. Files outside the workspace folder get completions from their own text only, and the
secret patterns still apply to them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from desktop.project.context import Context, ContextRequest, assemble, sendable
from desktop.project.ignore import IgnoreRules
from desktop.project.index import IndexClosed, ProjectIndex, project_id

__all__ = ["Project"]


class Project:
    def __init__(self, root: Path | None, cache_dir: Path) -> None:
        self.root = root.resolve() if root is not None and root.is_dir() else None
        self._patterns: tuple[str, ...] = ()
        self.index: ProjectIndex | None = None
        self.id = ""
        if self.root is not None:
            self.id = project_id(self.root)
            self.index = ProjectIndex(self.root, cache_dir / "index" / f"{self.id}.sqlite")
        self._rules = IgnoreRules(self.root) if self.root is not None else None
        self._refreshing: asyncio.Task[None] | None = None
        self._again = False
        self.ready = asyncio.Event()  # set once the first refresh has finished

    # -- exclusions ------------------------------------------------------------------------------

    def set_policy(self, patterns: Sequence[str]) -> bool:
        """Exclude what the appliance's policy excludes; True when that changed (then re-index)."""
        patterns = tuple(dict.fromkeys(patterns))
        if patterns == self._patterns:
            return False
        self._patterns = patterns
        if self.root is not None:
            self._rules = IgnoreRules(self.root, policy_patterns=patterns)
        if self.index is not None:
            self.index.policy_patterns = patterns
        return True

    def relative(self, path: Path) -> str | None:
        """``path`` relative to the project root, or None when it is outside it."""
        if self.root is None:
            return None
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return None

    def never_sent(self, path: Path) -> bool:
        rel = self.relative(path)
        if rel is not None and self._rules is not None:
            return self._rules.never_sent(rel)
        # Outside the project: no project rules, but a secret stays a secret wherever it lives.
        return IgnoreRules(path.parent, policy_patterns=self._patterns).never_sent(path.name)

    # -- the index ----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the index up to date in a thread; a refresh asked for during one runs after it."""
        if self.index is None:
            self.ready.set()
            return
        if self._refreshing is not None and not self._refreshing.done():
            self._again = True
            return
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        index = self.index
        assert index is not None
        while True:
            self._again = False
            try:
                await asyncio.to_thread(index.refresh)
            except IndexClosed:
                return
            finally:
                self.ready.set()
            if not self._again:
                return

    async def close(self) -> None:
        if self.index is not None:
            await asyncio.to_thread(self.index.close)

    # -- context ------------------------------------------------------------------------------------

    async def context(
        self, current: Path, text: str, line: int, question: str, buffers: Mapping[Path, str], budget: int,
        *, keep_current: bool = False,
    ) -> Context:
        """Context for a request about ``current`` (1-based ``line``), from the index and the other
        open ``buffers``, without anything never to be sent; the current file's own lines are left
        out unless ``keep_current`` (completion sends the lines around the cursor itself)."""
        index, rules = self.index, self._rules
        rel = self.relative(current)
        if index is None or rules is None or rel is None or budget <= 0 or not self.ready.is_set():
            return Context(budget)
        others = {r: t for p, t in buffers.items() if (r := self.relative(p)) is not None and r != rel}
        request = ContextRequest(
            question=question, current_path=rel, current_text=text, cursor_line=line,
            recent_paths=tuple(others), buffers=others,
        )

        def work() -> Context:
            # The current file's share of the budget goes unused when its lines are dropped, so ask for more.
            got = sendable(assemble(index, request, budget=budget if keep_current else budget * 4 // 3), rules)
            if not keep_current:
                got = Context(budget, [it for it in got.items if it.path != rel])
            return got.fit(budget)

        try:
            return await asyncio.to_thread(work)
        except IndexClosed:
            return Context(budget)
