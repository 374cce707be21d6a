"""The local project index: SQLite FTS5 over line-numbered chunks, plus symbol definitions.

One database file per project, in the user's cache directory. It is a cache: it can always be
rebuilt from the files, so it is written with ``synchronous=OFF`` (a crash costs a re-index, never
data; WAL keeps an interrupted transaction from leaving a half-written index), and an index written
by another version of this code is dropped and rebuilt (``PRAGMA user_version``).

Layout, chosen for indexing speed (``bench/index.py``):

* The FTS5 table is *contentless*: it holds the token index only, not a second copy of the text
  (searching reads the few files it returns from disk, as context assembly does anyway). A chunk's
  rowid is ``file_id << 20 | chunk_number``; chunks are :data:`CHUNK_LINES` lines, so the rowid and
  the file's line count give the line range and no per-chunk table is needed.
* A changed file gets a new id, and the FTS rows of its old id become unreachable: every query joins
  to ``files``, so they are never returned. SQLite before 3.43 cannot delete from a contentless
  table without the old text, so instead, once unreachable rows outnumber half the live ones, the
  next refresh rebuilds the index from the files.
* The walk, reading, hashing, cutting and symbol finding run in threads of their own
  (:mod:`desktop.project.index_build`) while the caller's thread writes each batch as a few
  statements over packed rows.

Updates are incremental: a file whose size and mtime are unchanged is not read again; one whose
bytes hash the same is only re-stamped. Each thread gets its own connection, so a context lookup in
one worker is never blocked by indexing in another (WAL lets readers run beside the writer).

Closing (the project is switched, the window closes) may come while a worker still indexes or
reads: every use of a connection is counted, ``close`` stops a running refresh at its next batch
(rolled back) and waits for the count to reach zero before closing connections — closing one under
a thread inside SQLite crashes the process. A use that starts after ``close`` raises
:class:`IndexClosed`.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from desktop.project.index_build import (
    CHUNK_BITS,
    CHUNK_LINES,
    MAX_PER_FILE,
    Known,
    Walk,
    in_background,
    prepare,
    read_file,
)
from desktop.project.scan import ScannedFile, ScanResult, decode_text, walk
from shared.errors import InputError

__all__ = ["CHUNK_LINES", "Hit", "IndexStats", "ProjectIndex", "SymbolHit", "project_id"]

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_STOPWORDS = frozenset(
    ["the", "and", "for", "with", "that", "this", "from", "what", "how", "does", "are", "was", "were", "will", "can", "into", "not", "but", "you", "your", "about", "which", "when", "where", "why", "who", "use", "used", "using", "have", "has", "had", "should", "would", "could", "please", "make", "write", "add", "change", "function", "code", "file"]
)

_SCHEMA_VERSION = 4
_DROP = """
DROP TABLE IF EXISTS chunks_vocab; DROP TABLE IF EXISTS chunks_fts; DROP TABLE IF EXISTS chunks;
DROP TABLE IF EXISTS symbols; DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS meta;
"""
_FTS = """
CREATE VIRTUAL TABLE chunks_fts USING fts5(body, content='', tokenize="unicode61 tokenchars '_'");
CREATE VIRTUAL TABLE chunks_vocab USING fts5vocab(chunks_fts, 'row');
"""
_SCHEMA = (
    """
CREATE TABLE files (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, line_count INTEGER NOT NULL);
-- A symbol's id is file_id << 20 | its number in the file: a file's symbols are one id range.
CREATE TABLE symbols (id INTEGER PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, line INTEGER NOT NULL);
CREATE INDEX symbols_name ON symbols(name);
-- next_file_id never goes back, so a reused id can never revive unreachable FTS rows.
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('next_file_id', 1), ('live_chunks', 0), ('dead_chunks', 0);
"""
    + _FTS
)

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


Progress = Callable[[int, int], None]


class IndexClosed(Exception):
    """The index was closed (its project switched or the window closed) before or while this ran."""


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
        self._closed = False
        self._busy = 0  # uses of a connection under way
        self._idle = threading.Condition()
        with self._use() as conn:
            # A cache: an index written by another version of this code is dropped and rebuilt.
            if int(conn.execute("PRAGMA user_version").fetchone()[0]) != _SCHEMA_VERSION:
                conn.executescript(_DROP)
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    @contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, counted as in use until the block ends."""
        with self._idle:
            if self._closed:
                raise IndexClosed(f"the index of {self.root.name} is closed")
            self._busy += 1
        try:
            yield self._conn()
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

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
        """Stop a running refresh, wait for every use under way to end, close the connections."""
        with self._idle:
            self._closed = True
            while self._busy:
                self._idle.wait()
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # -- writing ---------------------------------------------------------------------------------

    def refresh(self, progress: Progress | None = None) -> IndexStats:
        """Walk the project and bring the index up to date.

        Files are read and indexed while the walk goes on, so ``progress``'s total (files found)
        grows until the walk is done, a small share of the time: the walk reads directories only.
        """
        return self._apply(Walk(walk(self.root, {}, policy_patterns=self.policy_patterns)), progress)

    def update(self, result: ScanResult, progress: Progress | None = None) -> IndexStats:
        """Bring the index in line with the files of ``result``."""
        return self._apply(result.files, progress)

    def _apply(self, files: Walk | Sequence[ScannedFile], progress: Progress | None) -> IndexStats:
        """Make the index hold exactly ``files``, in one transaction."""
        with self._use() as conn, self._write_lock:
            conn.execute("BEGIN")
            try:
                stats = self._update(conn, files, progress)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return stats

    def _update(self, conn: sqlite3.Connection, files: Walk | Sequence[ScannedFile], progress: Progress | None) -> IndexStats:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        known = {
            row[0]: Known(*row[1:])
            for row in conn.execute("SELECT path, id, size, mtime_ns, sha256, line_count FROM files")
        }
        # Unreachable FTS rows only cost space and skew bm25's statistics a little; past half the
        # live ones, everything is indexed afresh (a contentless table is emptied only by a rebuild).
        rebuild = meta["dead_chunks"] > max(1000, meta["live_chunks"] // 2)
        if rebuild:
            # Statement by statement: executescript() would commit the open transaction first.
            for sql in ["DROP TABLE chunks_vocab", "DROP TABLE chunks_fts", *_FTS.split(";")]:
                if sql.strip():
                    conn.execute(sql)
            conn.execute("DELETE FROM symbols")
            conn.execute("DELETE FROM files")
            meta["live_chunks"] = meta["dead_chunks"] = 0
        # Into an empty index, the name index is built once at the end (sorting is cheaper than
        # inserting 70,000 names one by one into a b-tree).
        bulk = not known or rebuild
        if bulk:
            conn.execute("DROP INDEX symbols_name")
        added = changed = removed = unchanged = skipped = 0
        # The walk, reading and cutting run in a thread while this one writes (see the module doc).
        prepared = prepare(str(self.root), files, known, meta["next_file_id"], rebuild)
        for batch in in_background(prepared, "index-reader", 2):
            if self._closed:  # close() waits for this refresh: stop here, rolled back
                raise IndexClosed(f"the index of {self.root.name} was closed during a refresh")
            for sql, params in batch.statements:
                conn.execute(sql, params)
            meta["next_file_id"] = batch.next_id
            meta["dead_chunks"] += batch.dead_chunks
            meta["live_chunks"] += len(batch.chunks) - batch.dead_chunks
            added += batch.added
            changed += batch.changed
            removed += batch.removed
            unchanged += batch.unchanged
            skipped += batch.skipped
            if progress is not None:
                total = files.found if isinstance(files, Walk) else len(files)
                progress(batch.done, max(total, batch.done))
        if bulk:
            conn.execute("CREATE INDEX symbols_name ON symbols(name)")
        conn.executemany("UPDATE meta SET value = ? WHERE key = ?", [(v, k) for k, v in meta.items()])
        return IndexStats(added, changed, removed, unchanged, skipped)

    # -- reading ---------------------------------------------------------------------------------

    def file_count(self) -> int:
        with self._use() as conn:
            return int(conn.execute("SELECT count(*) FROM files").fetchone()[0])

    def file_sha256(self, path: str) -> str | None:
        with self._use() as conn:
            row = conn.execute("SELECT sha256 FROM files WHERE path = ?", (path,)).fetchone()
        return None if row is None else str(row[0])

    def paths(self) -> list[str]:
        with self._use() as conn:
            return [r[0] for r in conn.execute("SELECT path FROM files ORDER BY path")]

    def search(
        self, query: str, *, limit: int = 8, exclude_paths: Iterable[str] = (), with_text: bool = True
    ) -> list[Hit]:
        """Best chunks for the words of ``query`` (bm25), at most ``limit``.

        The index holds no text: a hit's ``text`` is read from the file now, or left empty
        without ``with_text`` (context assembly reads the files itself, once).
        """
        words = [w for w in dict.fromkeys(_WORD.findall(query)) if w.lower() not in _STOPWORDS][:16]
        if not words:
            return []
        with self._use() as conn:
            # Words found in a large share of all chunks ("self", "return") rank nothing and make
            # bm25 score most of the index, so they are dropped; the rarest words are always kept.
            # Unreachable rows are counted on both sides of that comparison, as the vocabulary has them.
            total = max(1, sum(v for k, v in conn.execute("SELECT key, value FROM meta") if k.endswith("_chunks")))
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
                f"SELECT f.path, f.line_count, c.rowid & {(1 << CHUNK_BITS) - 1}, bm25(chunks_fts) AS score "
                f"FROM chunks_fts AS c JOIN files AS f ON f.id = c.rowid >> {CHUNK_BITS} "
                "WHERE chunks_fts MATCH ? ORDER BY score LIMIT ?",
                (match, limit + len(excluded) * 4),
            ).fetchall()
        hits = []
        texts: dict[str, list[str]] = {}
        for path, line_count, number, score in rows:
            if path in excluded:
                continue
            start = number * CHUNK_LINES + 1
            end = min(line_count, start + CHUNK_LINES - 1)
            if with_text and path not in texts:
                data = read_file(str(self.root / path), 1 << 16)
                decoded = None if data is None else decode_text(data)
                texts[path] = [] if decoded is None else decoded.split("\n")
            text = "\n".join(texts[path][start - 1 : end]) if with_text else ""
            hits.append(Hit(path, start, end, -float(score), text))
            if len(hits) == limit:
                break
        return hits

    def definitions(self, names: Sequence[str], *, limit: int = 20) -> list[SymbolHit]:
        """Where the given names are defined; names earlier in the list come first."""
        if not names:
            return []
        order = {n: i for i, n in enumerate(names)}
        marks = ",".join("?" * len(names))
        with self._use() as conn:
            rows = conn.execute(
                "SELECT s.name, s.kind, f.path, s.line FROM symbols AS s "
                f"JOIN files AS f ON f.id = s.id >> {CHUNK_BITS} WHERE s.name IN ({marks}) LIMIT ?",
                (*names, limit * 4),
            ).fetchall()
        hits = [SymbolHit(*r) for r in rows]
        hits.sort(key=lambda h: (order[h.name], h.path, h.line))
        return hits[:limit]

    def symbols_in(self, path: str) -> list[SymbolHit]:
        with self._use() as conn:
            rows = conn.execute(
                "SELECT s.name, s.kind, f.path, s.line FROM files AS f JOIN symbols AS s ON s.id "
                f"BETWEEN f.id << {CHUNK_BITS} AND (f.id << {CHUNK_BITS}) + {MAX_PER_FILE - 1} WHERE f.path = ? ORDER BY s.line",
                (path,),
            ).fetchall()
        return [SymbolHit(*r) for r in rows]
