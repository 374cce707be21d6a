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
* Each batch of files goes in as a few statements over packed rows (:func:`_pack`), not a statement
  per row: SQLite releases the GIL while a statement runs, so a background thread can read, hash and
  cut the next batch (and find its symbols) meanwhile, and nothing waits for the GIL on every row.

Updates are incremental: a file whose size and mtime are unchanged is not read again; one whose
bytes hash the same is only re-stamped. Each thread gets its own connection, so a context lookup in
one worker is never blocked by indexing in another (WAL lets readers run beside the writer).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from desktop.project.scan import ScannedFile, ScanResult, decode_text, walk
from desktop.project.symbols import extract_symbols
from shared.errors import InputError

__all__ = ["CHUNK_LINES", "Hit", "IndexStats", "ProjectIndex", "SymbolHit", "project_id"]

CHUNK_LINES = 40
_CHUNK_BITS = 20
# Chunks (and symbols) per file: ids are file_id << 20 | number. A 1 MB file (the scan's limit) has
# at most 25k chunks; a larger one has its first 42M lines indexed.
_MAX_PER_FILE = 1 << _CHUNK_BITS
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_STOPWORDS = frozenset(
    ["the", "and", "for", "with", "that", "this", "from", "what", "how", "does", "are", "was", "were", "will", "can", "into", "not", "but", "you", "your", "about", "which", "when", "where", "why", "who", "use", "used", "using", "have", "has", "had", "should", "would", "could", "please", "make", "write", "add", "change", "function", "code", "file"]
)
_BATCH_CHARS = 2_000_000

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

_W = 20  # characters per number in a packed column: any 64-bit integer, with its sign


def _packed_select(columns: str) -> str:
    """``SELECT`` of rows packed by :func:`_pack`: ``columns`` is a string of ``t`` (text) and ``i``
    (integer) per column. ``?1`` is the row count, ``?2`` the numbers, ``?3`` the texts' bytes."""
    width = sum(2 if c == "t" else 1 for c in columns) * _W
    fields = []
    at = 0
    for c in columns:
        num = f"CAST(CAST(substr(?2, i * {width} + {at + 1}, {_W}) AS TEXT) AS INTEGER)"
        if c == "t":
            length = f"CAST(CAST(substr(?2, i * {width} + {at + _W + 1}, {_W}) AS TEXT) AS INTEGER)"
            fields.append(f"CAST(substr(?3, {num} + 1, {length}) AS TEXT)")
            at += 2 * _W
        else:
            fields.append(num)
            at += _W
    return (
        "SELECT " + ", ".join(fields) + " FROM "
        "(WITH RECURSIVE r(i) AS (SELECT 0 WHERE ?1 > 0 AND ?3 IS NOT NULL UNION ALL SELECT i + 1 FROM r WHERE i + 1 < ?1) SELECT i FROM r)"
    )


def _pack(columns: str, rows: Sequence[Sequence[str | int]]) -> tuple[int, bytes, bytes]:
    """Rows of ``columns`` (as for :func:`_packed_select`) as (count, numbers, texts).

    Thousands of rows go in as one statement: SQLite runs it without the GIL, so the reader thread
    works meanwhile, where a statement per row would wait for the GIL after every row. (JSON and
    ``json_each`` would do too, but SQLite 3.40 parses JSON at a third of the cost of the FTS5 insert.)
    """
    numbers: list[Sequence[int]] = []
    texts: list[bytes] = []
    offset = 0
    for kind, values in zip(columns, zip(*rows, strict=True) if rows else [() for _ in columns], strict=True):
        if kind == "i":
            numbers.append(values)
            continue
        encoded = [v.encode() for v in values]
        lengths = [len(e) for e in encoded]
        numbers.append(list(itertools.accumulate(lengths, initial=offset))[:-1])
        numbers.append(lengths)
        texts.append(b"".join(encoded))
        offset += sum(lengths)
    row = f"%0{_W}d" * len(numbers)
    return len(rows), "".join([row % values for values in zip(*numbers, strict=True)]).encode(), b"".join(texts)


_INSERT_FILES = "INSERT INTO files (id, path, size, mtime_ns, sha256, line_count) " + _packed_select("itiiti")
_INSERT_SYMBOLS = "INSERT INTO symbols (id, name, kind, line) " + _packed_select("itti")
_INSERT_CHUNKS = "INSERT INTO chunks_fts (rowid, body) " + _packed_select("it")
_DELETE_SYMBOLS = (
    f"WITH g(id) AS ({_packed_select('i')}) DELETE FROM symbols WHERE id IN (SELECT s.id FROM g "
    f"JOIN symbols AS s ON s.id BETWEEN g.id << {_CHUNK_BITS} AND (g.id << {_CHUNK_BITS}) + {_MAX_PER_FILE - 1})"
)
_DELETE_FILES = f"DELETE FROM files WHERE id IN ({_packed_select('i')})"
_RESTAMP = (
    "WITH j(id, size, mtime_ns) AS (" + _packed_select("iii") + ") "
    "UPDATE files SET size = j.size, mtime_ns = j.mtime_ns FROM j WHERE files.id = j.id"
)


def project_id(root: Path) -> str:
    """A stable identifier for a project folder on this machine (also sent as ``enclave.project``)."""
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]


def _chunk_count(line_count: int) -> int:
    return (line_count + CHUNK_LINES - 1) // CHUNK_LINES


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
class _Known:
    id: int
    size: int
    mtime_ns: int
    sha: str
    line_count: int


@dataclass
class _Batch:
    """One write's worth of prepared files; :meth:`seal` turns them into statements."""

    done: int = 0  # files looked at so far, for progress
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    chars: int = 0
    gone: list[_Known] = field(default_factory=list)  # index entries to drop
    restamp: list[tuple[int, int, int]] = field(default_factory=list)
    files: list[tuple[int, str, int, int, str, int]] = field(default_factory=list)
    symbols: list[tuple[int, str, str, int]] = field(default_factory=list)
    chunks: list[tuple[int, str]] = field(default_factory=list)
    statements: list[tuple[str, tuple[int, bytes, bytes]]] = field(default_factory=list)
    dead_chunks: int = 0
    next_id: int = 0
    removed: int = 0

    def seal(self, next_id: int) -> _Batch:
        """Pack the rows into statements (in the reader thread, so the writer only runs SQL)."""
        if self.gone:
            ids = _pack("i", [(k.id,) for k in self.gone])
            self.statements += [(_DELETE_SYMBOLS, ids), (_DELETE_FILES, ids)]
            self.dead_chunks = sum(_chunk_count(k.line_count) for k in self.gone)
        if self.restamp:
            self.statements.append((_RESTAMP, _pack("iii", self.restamp)))
        if self.files:
            self.statements += [
                (_INSERT_FILES, _pack("itiiti", self.files)),
                (_INSERT_SYMBOLS, _pack("itti", self.symbols)),
                (_INSERT_CHUNKS, _pack("it", self.chunks)),
            ]
        self.next_id = next_id
        return self


def _encodable(rel: str) -> bool:
    """Whether SQLite can store the path (a name that is not UTF-8 comes back with surrogates)."""
    try:
        rel.encode()
    except UnicodeEncodeError:
        return False
    return True


def _read(path: str, size: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        # One read of the size the scan saw, plus a byte to notice that the file has grown since.
        first = os.read(fd, size + 1)
        if len(first) <= size:
            return first
        parts = [first]
        while more := os.read(fd, 1 << 20):
            parts.append(more)
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


def _prepare(root: str, files: Iterable[ScannedFile], known: dict[str, _Known], next_id: int, force: bool) -> Iterator[_Batch]:
    """Read, hash, cut into chunks and find the symbols of what changed in ``files``, in batches.

    ``files`` may still be coming from the walk. The last batch drops what ``known`` has that
    ``files`` did not. ``force`` re-indexes every file (a rebuild, into emptied tables). New ids are
    handed out from ``next_id`` in order; each batch says what the next one is.
    """
    batch = _Batch()
    seen: set[str] = set()
    for done, f in enumerate(files, 1):
        batch.done = done
        seen.add(f.rel)
        old = known.get(f.rel)
        if force:
            old = None
        elif old is not None and old.size == f.size and old.mtime_ns == f.mtime_ns:
            batch.unchanged += 1
            continue
        data = _read(os.path.join(root, f.rel), f.size) if f.rel.isascii() or _encodable(f.rel) else None
        text = None if data is None else decode_text(data)
        if data is None or text is None:
            batch.skipped += 1
            if old is not None:
                batch.gone.append(old)
        else:
            sha = hashlib.sha256(data).hexdigest()
            if old is not None and sha == old.sha:
                batch.unchanged += 1
                batch.restamp.append((old.id, f.size, f.mtime_ns))
            else:
                if old is None:
                    batch.added += 1
                else:
                    batch.changed += 1
                    batch.gone.append(old)
                file_id, next_id = next_id, next_id + 1
                lines = text.split("\n")
                batch.files.append((file_id, f.rel, f.size, f.mtime_ns, sha, len(lines)))
                # The path's words are indexed with each chunk, so "where is config loaded" finds config.py.
                base = file_id << _CHUNK_BITS
                head = f.rel + "\n"
                for n, s in enumerate(range(0, min(len(lines), _MAX_PER_FILE * CHUNK_LINES), CHUNK_LINES)):
                    batch.chunks.append((base + n, head + "\n".join(lines[s : s + CHUNK_LINES])))
                symbols = extract_symbols(f.rel, text, extents=False)[:_MAX_PER_FILE]
                batch.symbols.extend([(base + n, s.name, s.kind, s.line) for n, s in enumerate(symbols)])
                batch.chars += len(text)
        if batch.chars >= _BATCH_CHARS or len(batch.files) + len(batch.restamp) + len(batch.gone) >= 2000:
            yield batch.seal(next_id)
            batch = _Batch(done=done)
    removed = [k for p, k in known.items() if p not in seen]
    batch.removed = len(removed)
    if not force:
        batch.gone += removed
    yield batch.seal(next_id)


_END = object()
_T = TypeVar("_T")


def _in_background(items: Iterator[_T], name: str, ahead: int) -> Iterator[_T]:
    """``items``, produced by a thread up to ``ahead`` items ahead of the consumer (0: no limit).

    An error in the thread is raised in the consumer; a consumer that stops early (an error while
    writing) makes the thread stop at its next item instead of blocking on a full queue forever.
    """
    out: queue.Queue[object] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer, which raises it
            put(e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = out.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


class _Walk:
    """The walk's files, found by a thread of their own, so that reading starts at once and the
    progress total (:attr:`found`) is the final one soon after."""

    def __init__(self, files: Iterable[ScannedFile]) -> None:
        self.found = 0
        self._files = files

    def _groups(self) -> Iterator[list[ScannedFile]]:
        group: list[ScannedFile] = []
        for f in self._files:
            group.append(f)
            self.found += 1
            if len(group) == 256:
                yield group
                group = []
        yield group

    def __iter__(self) -> Iterator[ScannedFile]:
        for group in _in_background(self._groups(), "index-walker", 0):
            yield from group


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
        """Walk the project and bring the index up to date.

        Files are read and indexed while the walk goes on, so ``progress``'s total (files found)
        grows until the walk is done, a small share of the time: the walk reads directories only.
        """
        return self._apply(_Walk(walk(self.root, {}, policy_patterns=self.policy_patterns)), progress)

    def update(self, result: ScanResult, progress: Progress | None = None) -> IndexStats:
        """Bring the index in line with the files of ``result``."""
        return self._apply(result.files, progress)

    def _apply(self, files: _Walk | Sequence[ScannedFile], progress: Progress | None) -> IndexStats:
        """Make the index hold exactly ``files``, in one transaction."""
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN")
            try:
                stats = self._update(conn, files, progress)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return stats

    def _update(self, conn: sqlite3.Connection, files: _Walk | Sequence[ScannedFile], progress: Progress | None) -> IndexStats:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        known = {
            row[0]: _Known(*row[1:])
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
        prepared = _prepare(str(self.root), files, known, meta["next_file_id"], rebuild)
        for batch in _in_background(prepared, "index-reader", 2):
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
                total = files.found if isinstance(files, _Walk) else len(files)
                progress(batch.done, max(total, batch.done))
        if bulk:
            conn.execute("CREATE INDEX symbols_name ON symbols(name)")
        conn.executemany("UPDATE meta SET value = ? WHERE key = ?", [(v, k) for k, v in meta.items()])
        return IndexStats(added, changed, removed, unchanged, skipped)

    # -- reading ---------------------------------------------------------------------------------

    def file_count(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM files").fetchone()[0])

    def file_sha256(self, path: str) -> str | None:
        row = self._conn().execute("SELECT sha256 FROM files WHERE path = ?", (path,)).fetchone()
        return None if row is None else str(row[0])

    def paths(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT path FROM files ORDER BY path")]

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
        conn = self._conn()
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
            f"SELECT f.path, f.line_count, c.rowid & {(1 << _CHUNK_BITS) - 1}, bm25(chunks_fts) AS score "
            f"FROM chunks_fts AS c JOIN files AS f ON f.id = c.rowid >> {_CHUNK_BITS} "
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
                data = _read(str(self.root / path), 1 << 16)
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
        rows = self._conn().execute(
            "SELECT s.name, s.kind, f.path, s.line FROM symbols AS s "
            f"JOIN files AS f ON f.id = s.id >> {_CHUNK_BITS} WHERE s.name IN ({marks}) LIMIT ?",
            (*names, limit * 4),
        ).fetchall()
        hits = [SymbolHit(*r) for r in rows]
        hits.sort(key=lambda h: (order[h.name], h.path, h.line))
        return hits[:limit]

    def symbols_in(self, path: str) -> list[SymbolHit]:
        rows = self._conn().execute(
            "SELECT s.name, s.kind, f.path, s.line FROM files AS f JOIN symbols AS s ON s.id "
            f"BETWEEN f.id << {_CHUNK_BITS} AND (f.id << {_CHUNK_BITS}) + {_MAX_PER_FILE - 1} WHERE f.path = ? ORDER BY s.line",
            (path,),
        ).fetchall()
        return [SymbolHit(*r) for r in rows]
