"""Periodic upkeep of a serving appliance: sealed-content retention and dead auth rows.

One daemon thread per process wakes every ``interval_s`` (and once at start) and:

- applies ``audit_sealed_retention_days`` (crypto-shreds sealed content past its age; the purge is
  itself an audit record, written only when something was shredded), and
- deletes ended login sessions, lapsed per-address throttle windows and long-dead tokens
  (``appliance.auth.maintenance.purge``; it never lifts an account lock).

Several replicas may run it at once: both jobs are idempotent and serialize in the database.
A failing tick is logged and retried at the next one; it never stops the server.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from appliance.audit.log import AuditLog
from appliance.audit.retention import apply_sealed_retention
from appliance.auth import maintenance
from appliance.config import Settings
from appliance.db.engine import UnitOfWork
from shared.errors import EnclaveError

__all__ = ["Housekeeper"]

log = logging.getLogger(__name__)


class Housekeeper:
    def __init__(
        self,
        *,
        settings: Settings,
        uow: UnitOfWork,
        audit_log: AuditLog,
        interval_s: float = 3600.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._settings = settings
        self._uow = uow
        self._audit = audit_log
        self._interval_s = interval_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> dict[str, int]:
        """One tick; returns what was removed (``sealed`` is absent when retention is off)."""
        now = self._clock()
        done: dict[str, int] = {}
        shredded = apply_sealed_retention(self._audit, self._settings, now=now)
        if shredded is not None:
            done["sealed"] = shredded
        with self._uow() as session:
            done.update(maintenance.purge(session, now=now))
        return done

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="enclave-housekeeping", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except EnclaveError as exc:
                log.warning("housekeeping failed, will retry: %s", exc)
            except Exception:  # a bug; keep serving and say so loudly
                log.exception("housekeeping failed")
            self._stop.wait(self._interval_s)
