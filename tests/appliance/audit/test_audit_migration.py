"""The append-only triggers exist at ``upgrade head`` on both backends.

A later SQLite batch migration that rebuilds ``audit_events`` or ``audit_checkpoints`` (copy to a
new table, drop, rename) loses their triggers without a word; this catches it.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from appliance.db import migrate
from appliance.db.engine import is_sqlite, make_engine

GUARDED = ("audit_events", "audit_checkpoints")


def _triggers(url: str) -> dict[str, set[str]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if is_sqlite(url):
                rows = conn.execute(
                    text("SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'")
                ).all()
            else:
                rows = conn.execute(
                    text(
                        "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                        "WHERE NOT t.tgisinternal AND t.tgenabled <> 'D'"
                    )
                ).all()
    finally:
        engine.dispose()
    found: dict[str, set[str]] = {}
    for table, name in rows:
        found.setdefault(str(table), set()).add(str(name))
    return found


def test_append_only_triggers_exist_at_head(db_url: str) -> None:
    migrate.upgrade(db_url)
    found = _triggers(db_url)
    for table in GUARDED:
        if is_sqlite(db_url):
            expected = {f"{table}_no_update", f"{table}_no_delete"}
        else:
            expected = {f"{table}_append_only", f"{table}_no_truncate"}
        assert expected <= found.get(table, set()), f"{table}: triggers {found.get(table)}"


@pytest.mark.parametrize("statement", ["UPDATE {table} SET seq = seq", "DELETE FROM {table}"])
@pytest.mark.parametrize("table", GUARDED)
def test_guarded_tables_refuse_changes_at_head(db_url: str, table: str, statement: str) -> None:
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            # A row to change: the triggers are per row on both backends.
            if table == "audit_events":
                conn.execute(
                    text(
                        "INSERT INTO audit_events (seq, time, actor, action, target, outcome, request_id, "
                        "client_address, details, content, prev_hash, hash) VALUES (1, 't', 'a', 'x', '', "
                        "'success', '', '', '{}', NULL, :h, :h)"
                    ),
                    {"h": "0" * 64},
                )
            else:
                conn.execute(
                    text(
                        "INSERT INTO audit_checkpoints (seq, head_hash, time, key_id, signature) "
                        "VALUES (1, :h, 't', 'k', 's')"
                    ),
                    {"h": "0" * 64},
                )
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement.format(table=table)))
    finally:
        engine.dispose()
