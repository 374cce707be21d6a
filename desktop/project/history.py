"""Local history of generations, per project, in SQLite in the user's data directory."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HistoryEntry", "HistoryStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY, project_id TEXT NOT NULL, at TEXT NOT NULL, model TEXT NOT NULL,
    question TEXT NOT NULL, answer TEXT NOT NULL, context TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS generations_project ON generations(project_id, id);
"""


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    project_id: str
    at: dt.datetime
    model: str
    question: str
    answer: str
    context: list[str]  # "path:start-end" of every item sent
    user: str = ""  # who asked (each account sees only its own history)


class HistoryStore:
    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(generations)")}
        if "user" not in columns:  # a history written before entries were kept per account
            self._conn.execute("ALTER TABLE generations ADD COLUMN user TEXT NOT NULL DEFAULT ''")
        self._lock = threading.Lock()

    def add(self, project_id: str, model: str, question: str, answer: str, context: list[str], *, at: dt.datetime,
            user: str = "") -> int:
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO generations (project_id, at, model, question, answer, context, user) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (project_id, at.isoformat(), model, question, answer, json.dumps(context), user),
            )
            return int(cur.lastrowid or 0)

    def list(self, project_id: str, *, limit: int = 100, user: str = "") -> list[HistoryEntry]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, project_id, at, model, question, answer, context, user FROM generations "
                "WHERE project_id = ? AND user = ? ORDER BY id DESC LIMIT ?",
                (project_id, user, limit),
            ).fetchall()
        return [
            HistoryEntry(r[0], r[1], dt.datetime.fromisoformat(r[2]), r[3], r[4], r[5], json.loads(r[6]), r[7])
            for r in rows
        ]

    def close(self) -> None:
        self._conn.close()
