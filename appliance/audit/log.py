"""The audit log: group-committed appends, checkpoints, and the audited reads of captured content.

Group commit: every thread of a process hands its prepared event to one writer thread and waits on
a future. The writer takes everything queued, appends it in ONE transaction (one fsync under
SQLite ``synchronous=FULL``, one WAL flush on PostgreSQL) and only then resolves the futures, so
an ``append`` returns only once its event is durable, and N waiting threads cost one commit.
Several processes or replicas each have their own writer; their transactions serialize on the
chain head (see ``store``).

Failing closed: if the transaction cannot commit — full disk, read-only file, database gone — every
event of the batch gets :class:`~shared.errors.AuditUnavailableError` and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from appliance.audit import checkpoints as cps
from appliance.audit.capture import digest_matches, open_sealed
from appliance.audit.chain import format_time, parse_time
from appliance.audit.checkpoints import Checkpoint
from appliance.audit.events import AuditEvent, AuditRecord, PreparedEvent, prepare_event
from appliance.audit.keys import AuditKeys, load_audit_keys
from appliance.audit.models import AuditEventRow, AuditSealedRow
from appliance.audit.query import AuditFilter, Page, export_lines, query_page
from appliance.audit.store import append_prepared, lock_head
from appliance.audit.verify import VerifyReport, verify_database
from appliance.config import Settings
from appliance.db.base import utcnow
from appliance.db.engine import is_sqlite
from shared.errors import AuditUnavailableError, NotFoundError, PermissionDeniedError

log = logging.getLogger(__name__)

__all__ = ["AUDITOR_ROLE", "AuditLog"]

AUDITOR_ROLE = "auditor"
_STOP = object()


class _Waiter:
    """What ``append`` waits on: the part of a Future it uses, on one lock. The writer's release
    wakes exactly the one waiting thread; a Future's Condition costs several times that, once per
    event, on the path every group commit's wake-up takes."""

    __slots__ = ("_done", "_error", "_result")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._result = 0
        self._error: BaseException | None = None

    def set_running_or_notify_cancel(self) -> bool:
        return True  # nobody can cancel an append: its caller is waiting for it

    def set_result(self, result: int) -> None:
        self._result = result
        self._done.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._done.release()

    def result(self, timeout: float) -> int:
        if not self._done.acquire(timeout=timeout):
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return self._result


@dataclass
class _Pending:
    event: PreparedEvent
    future: Future[int] | _Waiter
    # False once the caller gave up (cancelled its future): the event is still recorded — what
    # happened stays on the record — but there is no one left to tell.
    live: bool = True

    def take(self) -> _Pending:
        self.live = self.future.set_running_or_notify_cancel()
        return self


def _unavailable(exc: BaseException) -> AuditUnavailableError:
    reason = getattr(exc, "orig", None) or exc
    first_line = (str(reason).strip().splitlines() or [type(reason).__name__])[0]
    return AuditUnavailableError(f"audit store cannot commit: {first_line}")


class AuditLog:
    """One per process per database. Thread-safe; see the package docstring for the API."""

    def __init__(
        self,
        engine: Engine,
        keys: AuditKeys,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 300.0,
        max_batch: int = 1000,
        commit_timeout_s: float = 60.0,
        linger_s: float = 0.001,
        max_linger_s: float = 0.010,
        witness: Path | None = None,
    ) -> None:
        self.engine = engine
        self.keys = keys
        # Where each new checkpoint is also written, outside the database (cps.witness_checkpoint).
        self.witness = witness
        self._clock = clock
        self._every = checkpoint_every
        self._interval = checkpoint_interval_s
        self._max_batch = max_batch
        self._timeout = commit_timeout_s
        self._linger = linger_s
        self._max_linger = max(linger_s, max_linger_s)
        self._last_batch_size = 1
        self._commit_s = linger_s  # a running estimate of one group commit's wall time
        self._lock = threading.Lock()
        # Held by whoever is committing a group: the writer thread or an appending thread.
        self._commit_lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._sqlite = is_sqlite(engine)
        self._group_conn: Connection | None = None  # SQLite only; see _group_transaction
        self._last_cp_seq = -1  # unknown until the writer reads it
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine, *, keys: AuditKeys | None = None) -> AuditLog:
        """The appliance's log: keys from ``settings.keys_dir``, checkpoint cadence from settings."""
        return cls(
            engine,
            keys if keys is not None else load_audit_keys(settings),
            checkpoint_every=settings.audit_checkpoint_every,
            checkpoint_interval_s=settings.audit_checkpoint_interval_s,
            witness=settings.data_dir / cps.WITNESS_FILE,
        )

    # -- appending ---------------------------------------------------------------------------

    def submit(self, event: AuditEvent) -> Future[int]:
        """Queue ``event``; the future resolves to its seq once durably committed."""
        prepared = prepare_event(event, self.keys)
        future: Future[int] = Future()
        self._ensure_writer()
        self._queue.put(_Pending(prepared, future))
        return future

    def append(self, event: AuditEvent) -> int:
        """Append and wait until durable; returns the seq. Raises AuditUnavailableError.

        A lone appender (the last group was one event, no commit in progress) commits itself with
        whatever else is queued, sparing it two thread hand-offs; otherwise it queues for the
        writer thread's next group commit. (Concurrent appenders must not take that shortcut: the
        first to wake from a group would commit alone, and groups would alternate 1, N-1.) After a timeout the event may still commit later; the caller
        has refused its action by then, so the log can hold one record too many, never one too few.
        """
        pending = _Pending(prepare_event(event, self.keys), _Waiter())
        self._ensure_writer()
        if self._last_batch_size <= 1 and self._commit_lock.acquire(blocking=False):
            try:
                batch = [pending.take(), *self._drain()]
                self._last_batch_size = len(batch)
                self._commit(batch)
            finally:
                self._commit_lock.release()
        else:
            self._queue.put(pending)
        try:
            return pending.future.result(timeout=self._timeout)
        except TimeoutError:
            raise AuditUnavailableError(f"audit store did not commit within {self._timeout:g}s") from None

    def _drain(self) -> list[_Pending]:
        taken: list[_Pending] = []
        while len(taken) < self._max_batch - 1:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:  # close() is waiting for the writer: leave it its signal
                self._queue.put(_STOP)
                break
            taken.append(item.take())
        return taken

    async def append_async(self, event: AuditEvent) -> int:
        """``append`` for asyncio callers: waits without blocking the event loop."""
        future = self.submit(event)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self._timeout)
        except TimeoutError:
            raise AuditUnavailableError(f"audit store did not commit within {self._timeout:g}s") from None

    def append_in(self, session: Session | Connection, event: AuditEvent) -> int:
        """Append inside the caller's transaction: the event commits (or rolls back) with it.

        Returns the seq the event will have once the caller commits. Do not call :meth:`append`
        while holding such a transaction on SQLite: the writer would wait for your write lock.
        """
        prepared = prepare_event(event, self.keys)
        conn = session.connection() if isinstance(session, Session) else session
        try:
            seqs, _, _ = append_prepared(conn, [prepared], self._now)
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc
        return seqs[0]

    def _now(self) -> str:
        return format_time(self._clock())

    def _ensure_writer(self) -> None:
        if self._pid != os.getpid():
            # A forked child starts with one thread: it must not share the parent's connections,
            # its (absent) writer, or a lock some parent thread held at the fork.
            self.engine.dispose(close=False)
            self._lock = threading.Lock()
            self._commit_lock = threading.Lock()
            self._queue = queue.SimpleQueue()
            self._thread = None
            self._group_conn = None  # the parent's; dispose(close=False) left it to the parent
            self._pid = os.getpid()
        with self._lock:
            if self._closed:
                raise AuditUnavailableError("audit log is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="enclave-audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        q = self._queue
        next_check = time.monotonic() + self._interval
        while True:
            try:
                first = q.get(timeout=max(0.0, next_check - time.monotonic()))
            except queue.Empty:
                first = None
            if first is _STOP:
                return
            if first is not None:
                with self._commit_lock:
                    batch, stop = self._gather(q, first)
                    self._commit(batch)
                if stop:
                    return
            if time.monotonic() >= next_check:
                self._checkpoint_if_stale()
                next_check = time.monotonic() + self._interval

    def _gather(self, q: queue.SimpleQueue[Any], first: _Pending) -> tuple[list[_Pending], bool]:
        """``first`` plus what else is queued. If fewer appenders are waiting than joined the last
        batch, linger for the rest: they are usually just waking from the last commit. Waiting up
        to one commit's time (the running estimate, within [linger_s, max_linger_s]) never costs
        more than the commit (fsync) a straggler would otherwise need of its own, and on a busy
        machine waking eight threads can take longer than a fixed millisecond."""
        batch = [first.take()]
        linger = min(self._max_linger, max(self._linger, self._commit_s))
        deadline = time.monotonic() + linger
        while len(batch) < self._max_batch:
            try:
                if len(batch) >= self._last_batch_size:
                    item = q.get_nowait()
                else:
                    item = q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item.take())
        self._last_batch_size = len(batch)
        return batch, False

    @contextmanager
    def _group_transaction(self) -> Iterator[Connection]:
        """A transaction for one group commit (the caller holds ``_commit_lock``).

        On SQLite the group commits keep one connection instead of a pool checkout, check-in and
        reset per group (a large share of a group's CPU): a SQLite connection cannot go stale, and
        after a failure it is dropped all the same. PostgreSQL connections can (a server restart),
        so there every group takes a pre-pinged one from the pool."""
        if not self._sqlite:
            with self.engine.begin() as conn:
                yield conn
            return
        if self._group_conn is None:
            self._group_conn = self.engine.connect()
        conn = self._group_conn
        try:
            with conn.begin():
                yield conn
        except BaseException:
            self._group_conn = None
            conn.close()
            raise

    def _commit(self, batch: list[_Pending]) -> None:
        made: Checkpoint | None = None
        started = time.monotonic()
        try:
            with self._group_transaction() as conn:
                seqs, head_seq, head_hash = append_prepared(conn, [p.event for p in batch], self._now)
                made = self._checkpoint_if_due(conn, head_seq, head_hash)
            self._commit_s = 0.8 * self._commit_s + 0.2 * (time.monotonic() - started)
        except SQLAlchemyError as exc:
            error = _unavailable(exc)
            for p in batch:
                if p.live:
                    p.future.set_exception(error)
            return
        except Exception as exc:  # a bug: hand it to the callers instead of killing the writer
            for p in batch:
                if p.live:
                    p.future.set_exception(exc)
            return
        if made is not None:
            self._last_cp_seq = made.seq
            self._witness(made)
        for p, seq in zip(batch, seqs, strict=True):
            if p.live:
                p.future.set_result(seq)

    # -- checkpoints -------------------------------------------------------------------------

    def _checkpoint_if_due(self, conn: Connection, head_seq: int, head_hash: str) -> Checkpoint | None:
        if head_seq - self._last_cp_seq < self._every:
            return None
        latest = cps.latest_checkpoint(conn)  # another process may have made one
        self._last_cp_seq = latest.seq if latest is not None else 0
        if head_seq - self._last_cp_seq < self._every:
            return None
        return cps.store_checkpoint(conn, self.keys, head_seq, head_hash, self._now())

    def _checkpoint_if_stale(self) -> None:
        try:
            with self.engine.begin() as conn:
                head_seq, head_hash = lock_head(conn)
                latest = cps.latest_checkpoint(conn)
                if latest is not None and latest.seq >= head_seq:
                    return
                age = self._clock() - parse_time(latest.time) if latest is not None else None
                if age is None or age.total_seconds() >= self._interval:
                    made = cps.store_checkpoint(conn, self.keys, head_seq, head_hash, self._now())
                    self._last_cp_seq = made.seq
                else:
                    return
        except (SQLAlchemyError, AuditUnavailableError):
            # The next append reports the outage to its caller; a timer has no one to tell.
            return
        self._witness(made)

    def checkpoint(self) -> Checkpoint:
        """Sign and store a checkpoint of the current head now (returns the existing one if the
        head has not moved since)."""
        try:
            with self.engine.begin() as conn:
                head_seq, head_hash = lock_head(conn)
                made = cps.store_checkpoint(conn, self.keys, head_seq, head_hash, self._now())
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc
        self._witness(made)
        return made

    def _witness(self, cp: Checkpoint) -> None:
        """Write ``cp`` (committed) to the witness file; a failure is logged, never an outage:
        the database holds the checkpoint either way."""
        if self.witness is None:
            return
        try:
            cps.witness_checkpoint(cp, self.witness)
        except OSError as exc:
            log.error("audit: cannot write the checkpoint witness %s: %s", self.witness, exc)

    def witnessed(self) -> Checkpoint | None:
        """The checkpoint in the witness file, if there is one (InputError if it is unreadable)."""
        if self.witness is None or not self.witness.exists():
            return None
        return cps.read_checkpoint_file(self.witness)

    # -- reading -----------------------------------------------------------------------------

    def verify(self, *, checkpoint: Checkpoint | None = None) -> VerifyReport:
        """Verify the database, against ``checkpoint`` (an exported file) and the witness file."""
        known = [c for c in (checkpoint, self.witnessed()) if c is not None]
        return verify_database(self.engine, self.keys, checkpoints=known)

    def query(
        self, filters: AuditFilter | None = None, *, limit: int = 100, cursor: int | None = None
    ) -> Page:
        return query_page(self.engine, filters or AuditFilter(), limit=limit, cursor=cursor)

    def export(self, fmt: str, *, since: dt.datetime | None = None) -> Iterator[str]:
        return export_lines(self.engine, fmt, since=since)

    def _audited_access(
        self, action: str, target: str, actor: str, role: str, request_id: str, client: str
    ) -> None:
        if role != AUDITOR_ROLE:
            self.append(
                AuditEvent(
                    action=action,
                    actor=actor,
                    target=target,
                    outcome="denied",
                    request_id=request_id,
                    client_address=client,
                    details={"reason": f"role {role!r} is not {AUDITOR_ROLE!r}"},
                )
            )
            raise PermissionDeniedError("captured content is readable only with the auditor role")

    def read_sealed(
        self,
        ref: str,
        *,
        actor: str,
        role: str,
        request_id: str = "",
        client_address: str = "",
        approval: Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """Decrypt sealed content for an auditor. The read is appended (durably) before the
        plaintext is returned; if it cannot be recorded, nothing is returned. ``approval`` (who
        approved which read request, under ``sealed_read_approvals = 2``) goes into that record."""
        self._audited_access("audit.content.read", ref, actor, role, request_id, client_address)
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    AuditSealedRow.wrapped_key, AuditSealedRow.ciphertext, AuditSealedRow.purged_time
                ).where(AuditSealedRow.ref == ref)
            ).first()
        outcome, reason = "success", ""
        try:
            if row is None:
                raise NotFoundError(f"no sealed content {ref!r}")
            if row.wrapped_key is None:
                raise NotFoundError(
                    f"sealed content {ref} was purged at {row.purged_time} (its key was destroyed; "
                    "the record and its chain hash remain)"
                )
            content = open_sealed(self.keys, ref, row.wrapped_key, row.ciphertext)
        except Exception as exc:
            outcome, reason = "failure", str(exc)
            raise
        finally:
            self.append(
                AuditEvent(
                    action="audit.content.read",
                    actor=actor,
                    target=ref,
                    outcome=outcome,
                    request_id=request_id,
                    client_address=client_address,
                    details={**(approval or {}), **({"reason": reason} if reason else {})},
                )
            )
        return content

    def test_digest(
        self,
        seq: int,
        field: str,
        candidate: str,
        *,
        actor: str,
        role: str,
        request_id: str = "",
        client_address: str = "",
    ) -> bool:
        """Whether ``candidate`` is the ``field`` text digested in record ``seq`` (audited)."""
        target = f"seq:{seq}"
        self._audited_access("audit.content.tested", target, actor, role, request_id, client_address)
        with self.engine.connect() as conn:
            row = conn.execute(select(*AuditEventRow.__table__.c).where(AuditEventRow.seq == seq)).first()
        if row is None:
            raise NotFoundError(f"no audit record with seq {seq}")
        record = AuditRecord.from_row(row)
        result = digest_matches(self.keys, record.content or {}, field, candidate)
        self.append(
            AuditEvent(
                action="audit.content.tested",
                actor=actor,
                target=target,
                request_id=request_id,
                client_address=client_address,
                details={"field": field, "match": result},
            )
        )
        return result

    def purge_sealed(
        self,
        before: dt.datetime,
        *,
        actor: str = "system",
        reason: str = "",
        request_id: str = "",
        client_address: str = "",
        skip_if_none: bool = False,
    ) -> int:
        """Crypto-shred sealed content captured before ``before``: destroy the wrapped data keys
        (the ciphertext, which the chain hashes, stays). Returns how many were shredded.

        Recorded in the same transaction as ``audit.content.purged`` by ``actor``, with the
        cut-off and the range actually shredded (``count``, ``oldest``, ``newest`` capture
        times). ``skip_if_none``: record nothing when nothing was due (periodic retention)."""
        cutoff = format_time(before)
        due = (AuditSealedRow.time < cutoff) & AuditSealedRow.wrapped_key.is_not(None)
        try:
            with self.engine.begin() as conn:
                oldest, newest = conn.execute(
                    select(func.min(AuditSealedRow.time), func.max(AuditSealedRow.time)).where(due)
                ).one()
                if oldest is None and skip_if_none:
                    return 0
                if is_sqlite(self.engine):
                    # Overwrite freed space with zeros instead of leaving old key bytes in free pages.
                    conn.exec_driver_sql("PRAGMA secure_delete=ON")
                result = conn.execute(
                    update(AuditSealedRow).where(due).values(wrapped_key=None, purged_time=self._now())
                )
                count = int(result.rowcount or 0)
                details: dict[str, Any] = {"before": cutoff, "count": count}
                if count:
                    details |= {"oldest": oldest, "newest": newest}
                if reason:
                    details["reason"] = reason
                event = AuditEvent(
                    action="audit.content.purged",
                    actor=actor,
                    target="sealed",
                    request_id=request_id,
                    client_address=client_address,
                    details=details,
                )
                self.append_in(conn, event)
            if is_sqlite(self.engine):
                # ...and out of the write-ahead log, where the old pages still sit.
                raw = self.engine.raw_connection()
                try:
                    dbapi: Any = raw.driver_connection
                    dbapi.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    raw.close()
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from exc
        return count

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Finish what is queued, then stop the writer."""
        with self._lock:
            self._closed = True
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join()
        with self._commit_lock:
            if self._group_conn is not None and self._pid == os.getpid():
                self._group_conn.close()
            self._group_conn = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
