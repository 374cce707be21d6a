"""The local project index: SQLite FTS5 over line-numbered chunks, plus symbol definitions.

One database file per project, in the user's cache directory: it holds copies of project text, so
it lives on the user's machine only and can always be rebuilt from the files (hence
``synchronous=OFF``: a crash costs a re-index, never data).

Updates are incremental: a file whose size and mtime are unchanged is not read again; one whose
bytes hash the same is only re-stamped. Each thread gets its own connection, so a context lookup in
one worker is never blocked by indexing in another (WAL lets readers run beside the writer).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from desktop.project.scan import ScannedFile, ScanResult, decode_text, scan
from desktop.project.symbols import Symbol, extract_symbols
from shared.errors import InputError

__all__ = ["CHUNK_LINES", "Hit", "IndexStats", "ProjectIndex", "SymbolHit", "project_id"]

CHUNK_LINES = 40
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_STOPWORDS = frozenset(
    ["the", "and", "for", "with", "that", "this", "from", "what", "how", "does", "are", "was", "were", "will", "can", "into", "not", "but", "you", "your", "about", "which", "when", "where", "why", "who", "use", "used", "using", "have", "has", "had", "should", "would", "could", "please", "make", "write", "add", "change", "function", "code", "file"]
)

_SCHEMA_VERSION = 2
_DROP = """
DROP TABLE IF EXISTS chunks_vocab; DROP TABLE IF EXISTS chunks_fts; DROP TABLE IF EXISTS chunks;
DROP TABLE IF EXISTS symbols; DROP TABLE IF EXISTS files;
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, line_count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, start_line INTEGER NOT NULL, end_line INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_path ON chunks(path);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(body, tokenize="unicode61 tokenchars '_'");
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, 'row');
CREATE TABLE IF NOT EXISTS symbols (
    name TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL, line INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS symbols_name ON symbols(name);
CREATE INDEX IF NOT EXISTS symbols_path ON symbols(path);
"""


def project_id(root: Path) -> str:
    """A stable identifier for a project folder on this machine (also sent as ``enclave.project``)."""
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Hit:
    path: str
    start_line: int
    end_line: int
    score: float
    text: str


@dataclass(frozen=True)
class SymbolHit:
    """Where a definition starts; :func:`desktop.project.symbols.definition_end` finds its end."""

    name: str
    kind: str
    path: str
    line: int


@dataclass(frozen=True)
class IndexStats:
    added: int
    changed: int
    removed: int
    unchanged: int
    skipped: int

    @property
    def indexed(self) -> int:
        return self.added + self.changed


@dataclass(frozen=True)
class _Prepared:
    file: ScannedFile
    old_sha: str | None
    sha: str = ""
    text_lines: int | None = None  # None: binary or unreadable
    chunks: list[tuple[int, int, str]] = field(default_factory=list)
    symbols: list[Symbol] = field(default_factory=list)


def _prepare(root: Path, f: ScannedFile, old_sha: str | None) -> _Prepared:
    try:
        data = (root / f.rel).read_bytes()
    except OSError:
        return _Prepared(f, old_sha)
    text = decode_text(data)
    if text is None:
        return _Prepared(f, old_sha)
    sha = hashlib.sha256(data).hexdigest()
    lines = text.split("\n")
    if sha == old_sha:
        return _Prepared(f, old_sha, sha, len(lines))
    # The path's words are indexed with each chunk, so "where is config loaded" finds config.py.
    chunks = [
        (s + 1, min(len(lines), s + CHUNK_LINES), f.rel + "\n" + "\n".join(lines[s : s + CHUNK_LINES]))
        for s in range(0, len(lines), CHUNK_LINES)
    ]
    return _Prepared(f, old_sha, sha, len(lines), chunks, extract_symbols(f.rel, text, extents=False))


Progress = Callable[[int, int], None]


class ProjectIndex:
    """The index of one project root, stored at ``db_path``."""

    def __init__(self, root: Path, db_path: Path, *, policy_patterns: Sequence[str] = ()) -> None:
        if not root.is_dir():
            raise InputError(f"not a folder: {root}")
        self.root = root.resolve()
        self.db_path = db_path
        self.policy_patterns = tuple(policy_patterns)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        conn = self._conn()
        # A cache: an index written by another version of this code is dropped and rebuilt.
        if int(conn.execute("PRAGMA user_version").fetchone()[0]) != _SCHEMA_VERSION:
            conn.executescript(_DROP)
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA temp_store=MEMORY")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # -- writing ---------------------------------------------------------------------------------

    def refresh(self, progress: Progress | None = None) -> IndexStats:
        """Scan the project and bring the index up to date."""
        return self.update(scan(self.root, policy_patterns=self.policy_patterns), progress)

    def update(self, result: ScanResult, progress: Progress | None = None) -> IndexStats:
        """Bring the index in line with ``result`` in one transaction.

        One thread does it all: a reader thread beside the inserts was tried and measured no faster
        on this 2-core box (the GIL is handed back and forth on every row SQLite steps).
        """
        conn = self._conn()
        with self._write_lock:
            known = {row[0]: (row[1], row[2], row[3]) for row in conn.execute("SELECT path, size, mtime_ns, sha256 FROM files")}
            current = {f.rel for f in result.files}
            removed = [p for p in known if p not in current]
            todo = []
            unchanged = 0
            for f in result.files:
                old = known.get(f.rel)
                if old is not None and old[0] == f.size and old[1] == f.mtime_ns:
                    unchanged += 1
                else:
                    todo.append((f, old[2] if old else None))
            added = changed = skipped = 0
            total = len(todo)
            conn.execute("BEGIN")
            try:
                next_id = int(conn.execute("SELECT coalesce(max(id), 0) + 1 FROM chunks").fetchone()[0])
                for path in removed:
                    self._delete(conn, path)
                for done, (f, old_sha) in enumerate(todo, 1):
                    item = _prepare(self.root, f, old_sha)
                    if item.text_lines is None:
                        skipped += 1
                        if old_sha is not None:
                            self._delete(conn, f.rel)
                    elif item.sha == old_sha:
                        unchanged += 1
                        conn.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (f.size, f.mtime_ns, f.rel))
                    else:
                        if old_sha is None:
                            added += 1
                        else:
                            changed += 1
                            self._delete(conn, f.rel)
                        next_id = self._insert(conn, item, next_id)
                    if progress is not None and (done % 200 == 0 or done == total):
                        progress(done, total)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return IndexStats(added, changed, len(removed), unchanged, skipped)

    def _delete(self, conn: sqlite3.Connection, path: str) -> None:
        conn.execute("DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE path = ?)", (path,))
        conn.execute("DELETE FROM chunks WHERE path = ?", (path,))
        conn.execute("DELETE FROM symbols WHERE path = ?", (path,))
        conn.execute("DELETE FROM files WHERE path = ?", (path,))

    def _insert(self, conn: sqlite3.Connection, item: _Prepared, first_id: int) -> int:
        f = item.file
        assert item.text_lines is not None
        conn.execute(
            "INSERT INTO files (path, size, mtime_ns, sha256, line_count) VALUES (?, ?, ?, ?, ?)",
            (f.rel, f.size, f.mtime_ns, item.sha, item.text_lines),
        )
        conn.executemany(
            "INSERT INTO chunks (id, path, start_line, end_line) VALUES (?, ?, ?, ?)",
            [(first_id + i, f.rel, s, e) for i, (s, e, _) in enumerate(item.chunks)],
        )
        conn.executemany(
            "INSERT INTO chunks_fts (rowid, body) VALUES (?, ?)",
            [(first_id + i, body) for i, (_, _, body) in enumerate(item.chunks)],
        )
        conn.executemany(
            "INSERT INTO symbols (name, kind, path, line) VALUES (?, ?, ?, ?)",
            [(s.name, s.kind, f.rel, s.line) for s in item.symbols],
        )
        return first_id + len(item.chunks)

    # -- reading ---------------------------------------------------------------------------------

    def file_count(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM files").fetchone()[0])

    def file_sha256(self, path: str) -> str | None:
        row = self._conn().execute("SELECT sha256 FROM files WHERE path = ?", (path,)).fetchone()
        return None if row is None else str(row[0])

    def paths(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT path FROM files ORDER BY path")]

    def search(self, query: str, *, limit: int = 8, exclude_paths: Iterable[str] = ()) -> list[Hit]:
        """Best chunks for the words of ``query`` (bm25), at most ``limit``."""
        words = [w for w in dict.fromkeys(_WORD.findall(query)) if w.lower() not in _STOPWORDS][:16]
        if not words:
            return []
        conn = self._conn()
        # Words found in a large share of all chunks ("self", "return") rank nothing and make
        # bm25 score most of the index, so they are dropped; the rarest words are always kept.
        total = max(1, int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0]))
        marks = ",".join("?" * len(words))
        freq = dict(conn.execute(f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})", [w.lower() for w in words]))
        ranked = sorted((freq.get(w.lower(), 0), w) for w in words)
        ranked = [(n, w) for n, w in ranked if n > 0]
        kept = [w for n, w in ranked if n <= max(50, total // 50)] or [w for _, w in ranked[:2]]
        if not kept:
            return []
        match = " OR ".join(f'"{w}"' for w in kept[:8])
        excluded = set(exclude_paths)
        rows = conn.execute(
            "SELECT c.path, c.start_line, c.end_line, bm25(chunks_fts) AS score, chunks_fts.body "
            "FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
            "WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?",
            (match, limit + len(excluded) * 4),
        ).fetchall()
        hits = []
        for path, start, end, score, body in rows:
            if path in excluded:
                continue
            hits.append(Hit(path, start, end, -float(score), body.partition("\n")[2]))
            if len(hits) == limit:
                break
        return hits

    def definitions(self, names: Sequence[str], *, limit: int = 20) -> list[SymbolHit]:
        """Where the given names are defined; names earlier in the list come first."""
        if not names:
            return []
        order = {n: i for i, n in enumerate(names)}
        marks = ",".join("?" * len(names))
        rows = self._conn().execute(
            f"SELECT name, kind, path, line FROM symbols WHERE name IN ({marks}) LIMIT ?",
            (*names, limit * 4),
        ).fetchall()
        hits = [SymbolHit(*r) for r in rows]
        hits.sort(key=lambda h: (order[h.name], h.path, h.line))
        return hits[:limit]

    def symbols_in(self, path: str) -> list[SymbolHit]:
        rows = self._conn().execute(
            "SELECT name, kind, path, line FROM symbols WHERE path = ? ORDER BY line", (path,)
        ).fetchall()
        return [SymbolHit(*r) for r in rows]
