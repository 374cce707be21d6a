"""The open project: indexing in the background, keeping the index current, files in and out,
and context assembly off the GUI thread.

Exclusions come from two places: patterns given at construction (local configuration) and the
signed-in appliance's policy (:meth:`ProjectService.set_server_patterns`). Both reach the scan, so a
matching file never enters the index; the assembled context is checked against them once more,
because the editor's current file and the recent files are read from disk, not from the index.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from desktop.project.context import Context, ContextRequest, assemble, sendable
from desktop.project.ignore import IgnoreRules
from desktop.project.index import IndexClosed, IndexStats, ProjectIndex, project_id
from desktop.qt import QObject, QThreadPool, QTimer, Signal
from desktop.services.worker import Job, submit
from shared.errors import InputError

__all__ = ["ProjectService"]


class ProjectService(QObject):
    opened = Signal(str)  # root
    indexProgress = Signal(int, int)
    indexed = Signal(object)  # IndexStats
    pathsChanged = Signal(list)
    fileLoaded = Signal(str, str)  # rel path, text
    fileSaved = Signal(str)
    contextReady = Signal(int, object)  # request number, Context
    failed = Signal(str, object)

    def __init__(
        self,
        *,
        cache_dir: Path,
        pool: QThreadPool,
        policy_patterns: Sequence[str] = (),
        poll_ms: int = 2000,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._cache_dir = cache_dir
        self._pool = pool
        self._local_patterns = tuple(policy_patterns)
        self._policy = self._local_patterns
        self.index: ProjectIndex | None = None
        self.project_id = ""
        self._refreshing = False
        # A refresh was asked for while one ran (e.g. new exclusions): run another when it ends.
        self._refresh_again = False
        self.paths: list[str] = []
        self.recent: list[str] = []
        # Polling by stat is what keeps the index current: it needs no OS watch limits and sees
        # changes made by any program, including while the app was closed.
        self._poll_ms = poll_ms
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.refresh)

    @property
    def policy_patterns(self) -> tuple[str, ...]:
        return self._policy

    def set_server_patterns(self, patterns: Sequence[str]) -> None:
        """Exclude what the appliance's policy excludes (besides the local patterns); an open project
        is re-scanned, which drops newly excluded files from its index."""
        combined = tuple(dict.fromkeys((*self._local_patterns, *patterns)))
        if combined == self._policy:
            return
        self._policy = combined
        if self.index is not None:
            self.index.policy_patterns = combined
            self.refresh()

    @property
    def root(self) -> Path | None:
        return self.index.root if self.index else None

    def open(self, root: str) -> None:
        path = Path(root).expanduser()
        if not path.is_dir():
            self.failed.emit("open", InputError(f"not a folder: {root}"))
            return
        self.close()
        pid = project_id(path)
        self.index = ProjectIndex(path, self._cache_dir / "index" / f"{pid}.sqlite", policy_patterns=self._policy)
        self.project_id = pid
        self.recent = []
        self.opened.emit(str(self.index.root))
        self.refresh()
        self._timer.start()

    def close(self) -> None:
        self._timer.stop()
        if self.index is not None:
            self.index.close()
        self.index = None

    def refresh(self) -> None:
        index = self.index
        if index is None:
            return
        if self._refreshing:
            self._refresh_again = True
            return
        self._refreshing = True

        def work(job: Job) -> tuple[IndexStats, list[str], float]:
            started = time.monotonic()
            stats = index.refresh(lambda done, total: job.progress.emit(done, total))
            return stats, index.paths(), time.monotonic() - started

        submit(self._pool, work, on_done=self._refreshed, on_failed=self._refresh_failed,
               on_progress=self.indexProgress.emit, parent=self)

    def _refresh_done(self) -> None:
        self._refreshing = False
        if self._refresh_again:
            self._refresh_again = False
            self.refresh()

    def _refreshed(self, result: tuple[IndexStats, list[str], float]) -> None:
        stats, paths, seconds = result
        # A big tree takes a while to stat; polling then backs off so it stays a small share of a core.
        self._timer.setInterval(max(self._poll_ms, int(seconds * 10_000)))
        if paths != self.paths:
            self.paths = paths
            self.pathsChanged.emit(paths)
        self.indexed.emit(stats)
        self._refresh_done()

    def _refresh_failed(self, exc: BaseException) -> None:
        if not isinstance(exc, IndexClosed):  # the project was closed or switched: nothing to report
            self.failed.emit("index", exc)
        self._refresh_done()

    def _abs(self, rel: str) -> Path:
        root = self.root
        if root is None:
            raise InputError("no project is open")
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise InputError(f"{rel} is outside the project")
        return path

    def load(self, rel: str) -> None:
        def work(job: Job) -> tuple[str, str]:
            return rel, self._abs(rel).read_text(encoding="utf-8", errors="replace")

        submit(self._pool, work, on_done=lambda r: self.fileLoaded.emit(*r),
               on_failed=lambda e: self.failed.emit("load", e), parent=self)

    def save(self, rel: str, text: str) -> None:
        def work(job: Job) -> str:
            path = self._abs(rel)
            tmp = path.with_name(path.name + ".enclave-tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
            return rel

        submit(self._pool, work, on_done=self._saved, on_failed=lambda e: self.failed.emit("save", e), parent=self)

    def _saved(self, rel: str) -> None:
        self.touched(rel)
        self.fileSaved.emit(rel)
        self.refresh()

    def touched(self, rel: str) -> None:
        """Record ``rel`` as recently edited (most recent first)."""
        self.recent = [rel, *[p for p in self.recent if p != rel]][:10]

    def assemble(self, number: int, request: ContextRequest, budget: int = 3000) -> None:
        index = self.index
        if index is None:
            self.failed.emit("context", InputError("open a project first"))
            return
        if not request.recent_paths:
            request = ContextRequest(
                request.question, request.current_path, request.current_text, request.cursor_line,
                request.selection, request.visible, tuple(self.recent),
            )

        patterns = self._policy

        def work(job: Job) -> Context:
            return sendable(assemble(index, request, budget=budget), IgnoreRules(index.root, policy_patterns=patterns))

        def done(ctx: Any) -> None:
            self.contextReady.emit(number, ctx)

        submit(self._pool, work, on_done=done, on_failed=lambda e: self.failed.emit("context", e), parent=self)
