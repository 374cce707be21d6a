"""Building the project index: the walk, reading and cutting files, and the rows for SQLite.

:func:`prepare` turns the files a walk finds into batches of ready statements (:class:`Batch`); it
runs in a thread (:func:`in_background`) while :class:`desktop.project.index.ProjectIndex` executes
them, and the walk runs in another (:class:`Walk`).
Rows travel packed (:func:`pack`), a batch per statement, because SQLite releases the GIL while a
statement runs: the reader thread works meanwhile, where a statement per row would make the writer
wait for the GIL after every row.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from desktop.project.scan import ScannedFile, decode_text
from desktop.project.symbols import extract_symbols

__all__ = [
    "CHUNK_BITS",
    "CHUNK_LINES",
    "MAX_PER_FILE",
    "Batch",
    "Known",
    "Walk",
    "chunk_count",
    "in_background",
    "pack",
    "packed_select",
    "prepare",
    "read_file",
]

CHUNK_LINES = 40
CHUNK_BITS = 20
# Chunks (and symbols) per file: ids are file_id << 20 | number. A 1 MB file (the scan's limit) has
# at most 25k chunks; a larger one has its first 42M lines indexed.
MAX_PER_FILE = 1 << CHUNK_BITS
_BATCH_CHARS = 2_000_000

_W = 20  # characters per number in a packed column: any 64-bit integer, with its sign


def packed_select(columns: str) -> str:
    """``SELECT`` of rows packed by :func:`pack`: ``columns`` is a string of ``t`` (text) and ``i``
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


def pack(columns: str, rows: Sequence[Sequence[str | int]]) -> tuple[int, bytes, bytes]:
    """Rows of ``columns`` (as for :func:`packed_select`) as (count, numbers, texts).

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


_INSERT_FILES = "INSERT INTO files (id, path, size, mtime_ns, sha256, line_count) " + packed_select("itiiti")
_INSERT_SYMBOLS = "INSERT INTO symbols (id, name, kind, line) " + packed_select("itti")
_INSERT_CHUNKS = "INSERT INTO chunks_fts (rowid, body) " + packed_select("it")
_DELETE_SYMBOLS = (
    f"WITH g(id) AS ({packed_select('i')}) DELETE FROM symbols WHERE id IN (SELECT s.id FROM g "
    f"JOIN symbols AS s ON s.id BETWEEN g.id << {CHUNK_BITS} AND (g.id << {CHUNK_BITS}) + {MAX_PER_FILE - 1})"
)
_DELETE_FILES = f"DELETE FROM files WHERE id IN ({packed_select('i')})"
_RESTAMP = (
    "WITH j(id, size, mtime_ns) AS (" + packed_select("iii") + ") "
    "UPDATE files SET size = j.size, mtime_ns = j.mtime_ns FROM j WHERE files.id = j.id"
)


def chunk_count(line_count: int) -> int:
    return (line_count + CHUNK_LINES - 1) // CHUNK_LINES


@dataclass(frozen=True)
class Known:
    """What the index holds for a file."""

    id: int
    size: int
    mtime_ns: int
    sha: str
    line_count: int


@dataclass
class Batch:
    """One write's worth of prepared files; :meth:`seal` turns them into statements."""

    done: int = 0  # files looked at so far, for progress
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    chars: int = 0
    gone: list[Known] = field(default_factory=list)  # index entries to drop
    restamp: list[tuple[int, int, int]] = field(default_factory=list)
    files: list[tuple[int, str, int, int, str, int]] = field(default_factory=list)
    symbols: list[tuple[int, str, str, int]] = field(default_factory=list)
    chunks: list[tuple[int, str]] = field(default_factory=list)
    statements: list[tuple[str, tuple[int, bytes, bytes]]] = field(default_factory=list)
    dead_chunks: int = 0
    next_id: int = 0
    removed: int = 0

    def seal(self, next_id: int) -> Batch:
        """Pack the rows into statements (in the reader thread, so the writer only runs SQL)."""
        if self.gone:
            ids = pack("i", [(k.id,) for k in self.gone])
            self.statements += [(_DELETE_SYMBOLS, ids), (_DELETE_FILES, ids)]
            self.dead_chunks = sum(chunk_count(k.line_count) for k in self.gone)
        if self.restamp:
            self.statements.append((_RESTAMP, pack("iii", self.restamp)))
        if self.files:
            self.statements += [
                (_INSERT_FILES, pack("itiiti", self.files)),
                (_INSERT_SYMBOLS, pack("itti", self.symbols)),
                (_INSERT_CHUNKS, pack("it", self.chunks)),
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


def read_file(path: str, size: int) -> bytes | None:
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


def prepare(root: str, files: Iterable[ScannedFile], known: dict[str, Known], next_id: int, force: bool) -> Iterator[Batch]:
    """Read, hash, cut into chunks and find the symbols of what changed in ``files``, in batches.

    ``files`` may still be coming from the walk. The last batch drops what ``known`` has that
    ``files`` did not. ``force`` re-indexes every file (a rebuild, into emptied tables). New ids are
    handed out from ``next_id`` in order; each batch says what the next one is.
    """
    batch = Batch()
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
        data = read_file(os.path.join(root, f.rel), f.size) if f.rel.isascii() or _encodable(f.rel) else None
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
                base = file_id << CHUNK_BITS
                head = f.rel + "\n"
                for n, s in enumerate(range(0, min(len(lines), MAX_PER_FILE * CHUNK_LINES), CHUNK_LINES)):
                    batch.chunks.append((base + n, head + "\n".join(lines[s : s + CHUNK_LINES])))
                symbols = extract_symbols(f.rel, text, extents=False)[:MAX_PER_FILE]
                batch.symbols.extend([(base + n, s.name, s.kind, s.line) for n, s in enumerate(symbols)])
                batch.chars += len(text)
        if batch.chars >= _BATCH_CHARS or len(batch.files) + len(batch.restamp) + len(batch.gone) >= 2000:
            yield batch.seal(next_id)
            batch = Batch(done=done)
    removed = [k for p, k in known.items() if p not in seen]
    batch.removed = len(removed)
    if not force:
        batch.gone += removed
    yield batch.seal(next_id)


_END = object()
_T = TypeVar("_T")


def in_background(items: Iterator[_T], name: str, ahead: int) -> Iterator[_T]:
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


class Walk:
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
        for group in in_background(self._groups(), "index-walker", 0):
            yield from group


