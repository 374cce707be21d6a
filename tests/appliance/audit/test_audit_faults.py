"""When the store cannot commit, appends fail closed — and nothing already acknowledged is lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from appliance.audit import AuditEvent, AuditKeys, AuditLog
from appliance.db.engine import make_engine
from shared.errors import AuditUnavailableError

BIG = "x" * 3000  # a few of these fill a page


def _limit_pages(engine: Engine, pages: int) -> None:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(engine, "connect", on_connect)


def test_a_full_disk_fails_appends_closed_and_keeps_the_chain(sqlite_engine: Engine, keys: AuditKeys) -> None:
    path = sqlite_engine.url.database
    assert path is not None
    sqlite_engine.dispose()
    with sqlite3.connect(path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    full = make_engine(f"sqlite:///{path}")
    _limit_pages(full, pages + 8)  # the "disk" holds only a few more pages
    acked: list[int] = []
    with AuditLog(full, keys) as audit:
        with pytest.raises(AuditUnavailableError, match="full"):
            for n in range(200):
                acked.append(audit.append(AuditEvent(action="t", actor="a", details={"n": n, "pad": BIG})))
        assert acked == list(range(1, len(acked) + 1)) and len(acked) > 1
    full.dispose()
    # Space is freed: the log continues exactly where the last acknowledged event left it.
    roomy = make_engine(f"sqlite:///{path}")
    with AuditLog(roomy, keys) as audit:
        assert audit.append(AuditEvent(action="t", actor="a")) == len(acked) + 1
        report = audit.verify()
        assert report.ok and report.total == len(acked) + 1
    roomy.dispose()


def test_a_read_only_database_fails_appends_closed(sqlite_engine: Engine, keys: AuditKeys) -> None:
    with AuditLog(sqlite_engine, keys) as audit:
        audit.append(AuditEvent(action="t", actor="a"))
    path = Path(str(sqlite_engine.url.database))
    read_only = make_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with AuditLog(read_only, keys) as audit:
        with pytest.raises(AuditUnavailableError, match="cannot commit"):
            audit.append(AuditEvent(action="t", actor="b"))
        with pytest.raises(AuditUnavailableError):
            audit.checkpoint()
    read_only.dispose()
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar() == 1


def test_an_unreachable_database_fails_appends_closed(keys: AuditKeys) -> None:
    gone = make_engine(
        "postgresql+psycopg://postgres@127.0.0.1:9/enclave", connect_args={"connect_timeout": 2}
    )
    with AuditLog(gone, keys) as audit, pytest.raises(AuditUnavailableError, match="cannot commit"):
        audit.append(AuditEvent(action="generation.requested", actor="a"))
    gone.dispose()


def test_append_in_reports_a_failing_store_as_unavailable(sqlite_engine: Engine, keys: AuditKeys) -> None:
    path = Path(str(sqlite_engine.url.database))
    read_only = make_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    audit = AuditLog(read_only, keys)
    with pytest.raises(AuditUnavailableError), read_only.begin() as conn:
        audit.append_in(conn, AuditEvent(action="admin.user.disabled", actor="admin"))
    read_only.dispose()
