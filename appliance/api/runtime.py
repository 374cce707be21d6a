"""Everything ``enclave serve`` and ``enclave demo`` wire together from a data directory: the database,
the audit log, the installed model on the real engine, the app, and — when ``audit_syslog`` is set —
the forwarder that sends every committed audit record to the site's syslog collector, and the
housekeeper (sealed-content retention, dead auth rows; see ``housekeeping``).

The model is loaded (and its signed manifest verified against the data directory's pinned keys)
before the server listens. A directory without any installed model still serves sign-in,
administration and audit — ``/readyz`` says 503 and generation answers 503 until one is installed
and the server restarted; a model that is present but does not verify is an error, never served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from fastapi import FastAPI
from sqlalchemy import Engine

from appliance.api.app import close_app, create_app
from appliance.api.housekeeping import Housekeeper
from appliance.audit.log import AuditLog
from appliance.audit.syslog import SyslogForwarder
from appliance.config import Settings
from appliance.db import migrate
from appliance.db.engine import UnitOfWork, make_engine
from appliance.engine.engine import AsyncEngine, LLMEngine
from appliance.model.store import active_bundle_path, open_installed
from shared.errors import NotFoundError

__all__ = ["Runtime", "load_engine", "open_runtime"]

log = logging.getLogger(__name__)


def load_engine(settings: Settings) -> AsyncEngine:
    """The real engine on the active (or ``settings.model``) bundle, verified before it is read."""
    path = active_bundle_path(settings.data_dir, settings.model)
    bundle = open_installed(path, settings.data_dir)
    provider: Literal["cpu", "cuda"] = "cuda" if settings.execution_provider == "cuda" else "cpu"
    llm = LLMEngine.from_bundle(
        bundle,
        provider=provider,
        device_ids=settings.device_ids,
        num_slots=settings.max_batch,
        intra_op_threads=settings.intra_op_threads,
        max_waiting=settings.max_waiting,
        prefill_chunk=settings.prefill_chunk or None,
        prefill_memory=settings.prefill_memory_mb << 20,
    )
    return AsyncEngine(llm)


@dataclass
class Runtime:
    settings: Settings
    db: Engine
    audit: AuditLog
    engine: AsyncEngine | None
    app: FastAPI
    warnings: list[str] = field(default_factory=list)
    syslog: SyslogForwarder | None = None
    housekeeper: Housekeeper | None = None

    def close(self) -> None:
        if self.housekeeper is not None:
            self.housekeeper.stop()
        if self.syslog is not None:
            # Its position is kept in the data directory: what it has not sent yet goes at the next start.
            self.syslog.stop()
        close_app(self.app)
        if self.engine is not None:
            self.engine.close()
        self.audit.close()
        self.db.dispose()


def open_runtime(settings: Settings, *, require_model: bool = False) -> Runtime:
    migrate.check(settings.db_url)
    db = make_engine(settings.db_url)
    audit = AuditLog.from_settings(settings, db)
    warnings: list[str] = []
    engine: AsyncEngine | None = None
    syslog: SyslogForwarder | None = None
    try:
        syslog = SyslogForwarder.from_settings(settings, db)
        try:
            engine = load_engine(settings)
        except NotFoundError as exc:
            if require_model:
                raise
            warnings.append(f"no model loaded ({exc}); generation answers 503 until one is installed")
        uow = UnitOfWork(db)
        app = create_app(settings=settings, uow=uow, audit_log=audit, engine=engine)
        # Before the first request: starting the helper takes the GIL for a while (see body_parse).
        app.state.enclave.body_parser.start()
        if syslog is not None:
            syslog.start()
        housekeeper = Housekeeper(settings=settings, uow=uow, audit_log=audit)
        housekeeper.start()
    except BaseException:
        if syslog is not None:
            syslog.stop()
        if engine is not None:
            engine.close()
        audit.close()
        db.dispose()
        raise
    return Runtime(settings, db, audit, engine, app, warnings, syslog, housekeeper)
