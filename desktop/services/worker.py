"""Run a blocking call on a QThreadPool and get its result back on the GUI thread as a signal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from desktop.qt import QObject, QRunnable, QThreadPool, Signal

__all__ = ["Job", "submit"]


class Job(QObject):
    """Signals of one background call. ``done``/``failed`` arrive on the thread that created the Job."""

    done = Signal(object)
    failed = Signal(object)  # the exception
    progress = Signal(int, int)
    item = Signal(object)  # for calls that yield pieces (streams)


class _Runnable(QRunnable):
    def __init__(self, job: Job, fn: Callable[[Job], Any]) -> None:
        super().__init__()
        self._job = job
        self._fn = fn

    def run(self) -> None:
        try:
            result = self._fn(self._job)
        except BaseException as exc:  # delivered to the GUI thread, which decides what to show
            self._job.failed.emit(exc)
        else:
            self._job.done.emit(result)


def submit(
    pool: QThreadPool,
    fn: Callable[[Job], Any],
    *,
    on_done: Callable[[Any], None] | None = None,
    on_failed: Callable[[BaseException], None] | None = None,
    on_item: Callable[[Any], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    parent: QObject | None = None,
) -> Job:
    """Run ``fn(job)`` in ``pool``; ``fn`` may emit ``job.progress``/``job.item`` as it goes."""
    job = Job(parent)
    if on_done is not None:
        job.done.connect(on_done)
    if on_failed is not None:
        job.failed.connect(on_failed)
    # Connected before the job starts: a queued signal emitted with no connection is lost.
    if on_item is not None:
        job.item.connect(on_item)
    if on_progress is not None:
        job.progress.connect(on_progress)
    job.done.connect(job.deleteLater)
    job.failed.connect(job.deleteLater)
    pool.start(_Runnable(job, fn))
    return job
