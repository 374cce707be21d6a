"""The index kept current: changed and removed files, the rebuild that clears unreachable rows,
progress, errors mid-refresh, and the packed rows the writer sends to SQLite."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

import desktop.project.index_build as index_build
from desktop.project.index import CHUNK_LINES, ProjectIndex
from desktop.project.index_build import pack, packed_select


def _fts_rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM chunks_fts_docsize").fetchone()[0])
    finally:
        conn.close()


def _meta(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()


def test_old_text_of_a_changed_or_removed_file_is_never_found(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "a.py").write_text("zebrafish = 1\n")
    (root / "b.py").write_text("okapi = 2\n")
    ix = ProjectIndex(root, tmp_path / "ix.sqlite")
    ix.refresh()
    assert [h.path for h in ix.search("zebrafish")] == ["a.py"]
    (root / "a.py").write_text("narwhal = 1\n")
    (root / "b.py").unlink()
    stats = ix.refresh()
    assert (stats.changed, stats.removed) == (1, 1)
    assert ix.search("zebrafish") == [] and ix.search("okapi") == []
    [hit] = ix.search("narwhal")
    assert (hit.path, hit.start_line, hit.end_line, hit.text) == ("a.py", 1, 2, "narwhal = 1\n")
    ix.close()


def test_a_hit_names_its_chunk_lines_and_text(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    lines = [f"line_{i} = {i}" for i in range(1, 101)]
    lines[84] = "capybara = 85"
    (root / "m.py").write_text("\n".join(lines))
    ix = ProjectIndex(root, tmp_path / "ix.sqlite")
    ix.refresh()
    [hit] = ix.search("capybara")
    assert (hit.start_line, hit.end_line) == (2 * CHUNK_LINES + 1, 100)
    assert hit.text == "\n".join(lines[2 * CHUNK_LINES :])
    ix.close()


def test_unreachable_rows_past_the_limit_make_the_next_refresh_rebuild(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    big = root / "big.py"
    (root / "small.py").write_text("def keep():\n    return 1\n")
    db = tmp_path / "ix.sqlite"
    ix = ProjectIndex(root, db)
    chunks = 700
    for version in range(3):
        big.write_text("".join(f"v{version}_{i} = {i}\n" for i in range(chunks * CHUNK_LINES - 1)))
        os.utime(big, ns=(version + 1, version + 1))
        ix.refresh()
    # Two old versions of big.py are unreachable: more than 1,000 rows and half the live ones.
    assert _meta(db)["dead_chunks"] == 2 * chunks
    assert _fts_rows(db) == 3 * chunks + 1
    assert ix.search("v0_5") == [] and [h.path for h in ix.search("v2_5")] == ["big.py"]
    stats = ix.refresh()  # nothing changed on disk, but the index is rebuilt
    assert (stats.added, stats.changed, stats.removed) == (2, 0, 0)
    assert _meta(db)["dead_chunks"] == 0
    assert _fts_rows(db) == chunks + 1
    assert [h.path for h in ix.search("v2_5")] == ["big.py"]
    assert [h.path for h in ix.definitions(["keep"])] == ["small.py"]
    assert (ix.refresh().added, ix.refresh().unchanged) == (0, 2)
    ix.close()


def test_progress_ends_at_the_number_of_files(fixture_project: Path, tmp_path: Path) -> None:
    ix = ProjectIndex(fixture_project, tmp_path / "ix.sqlite")
    seen: list[tuple[int, int]] = []
    stats = ix.refresh(lambda done, total: seen.append((done, total)))
    walked = stats.added + stats.changed + stats.unchanged + stats.skipped
    assert seen[-1] == (walked, walked)
    assert all(done <= total for done, total in seen)
    ix.close()


def test_an_error_mid_refresh_leaves_the_index_as_it_was(
    fixture_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ix = ProjectIndex(fixture_project, tmp_path / "ix.sqlite")
    ix.refresh()
    before = (ix.paths(), ix.file_sha256("src/shop/cart.py"))
    cart = fixture_project / "src/shop/cart.py"
    cart.write_text(cart.read_text() + "\ndef wombat():\n    pass\n")

    def broken(path: str, text: str, *, extents: bool = True) -> list[object]:
        raise OSError("disk on fire")

    monkeypatch.setattr(index_build, "extract_symbols", broken)
    with pytest.raises(OSError, match="disk on fire"):
        ix.refresh()  # raised in the reader thread, re-raised here
    assert not [t for t in threading.enumerate() if t.name.startswith("index-")]
    assert (ix.paths(), ix.file_sha256("src/shop/cart.py")) == before

    monkeypatch.undo()

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ix.refresh(stop)  # an error in the writing thread stops the reader too
    assert not [t for t in threading.enumerate() if t.name.startswith("index-")]
    assert (ix.paths(), ix.file_sha256("src/shop/cart.py")) == before
    assert ix.refresh().changed == 1 and [h.path for h in ix.definitions(["wombat"])] == ["src/shop/cart.py"]
    ix.close()


@pytest.mark.skipif(os.name != "posix", reason="file names are bytes on POSIX only")
def test_a_file_name_that_is_not_utf8_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "fine.py").write_text("ok = 1\n")
    fd = os.open(os.fsencode(root) + b"/bad\xff.py", os.O_WRONLY | os.O_CREAT)
    os.write(fd, b"bad = 1\n")
    os.close(fd)
    ix = ProjectIndex(root, tmp_path / "ix.sqlite")
    stats = ix.refresh()
    assert (stats.added, stats.skipped) == (1, 1)
    assert ix.paths() == ["fine.py"]
    ix.close()


def test_packed_rows_come_back_as_they_went_in() -> None:
    rows = [(1, "a.py", -3, ""), (2**62, "d\u00e9j\u00e0/\u6f22.py", 1_700_000_000_123_456_789, "x\ny"), (0, "", 0, "z")]
    conn = sqlite3.connect(":memory:")
    assert conn.execute(packed_select("itit"), pack("itit", rows)).fetchall() == rows
    assert conn.execute(packed_select("itit"), pack("itit", [])).fetchall() == []


def test_search_without_text_finds_the_same_chunks(fixture_project: Path, tmp_path: Path) -> None:
    ix = ProjectIndex(fixture_project, tmp_path / "ix.sqlite")
    ix.refresh()
    full = ix.search("unit_price Cart")
    bare = ix.search("unit_price Cart", with_text=False)
    assert full and [(h.path, h.start_line, h.end_line) for h in bare] == [(h.path, h.start_line, h.end_line) for h in full]
    assert all(h.text for h in full) and not any(h.text for h in bare)
    ix.close()


def test_close_during_a_refresh_stops_it_and_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing an index under a thread still writing it once crashed the client (a connection closed
    inside SQLite); close now stops the refresh at its next batch and waits for it."""
    from desktop.project.index import IndexClosed

    monkeypatch.setattr(index_build, "_BATCH_CHARS", 1)  # a batch per file
    root = tmp_path / "proj"
    root.mkdir()
    for i in range(20):
        (root / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n")
    index = ProjectIndex(root, tmp_path / "idx.sqlite")
    started = threading.Event()
    outcome: list[BaseException | None] = []

    def progress(done: int, total: int) -> None:
        started.set()
        deadline = time.monotonic() + 30
        while not index._closed and time.monotonic() < deadline:  # hold the refresh until close() starts
            time.sleep(0.01)

    def run() -> None:
        try:
            index.refresh(progress)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    writer = threading.Thread(target=run)
    writer.start()
    assert started.wait(30)
    index.close()  # returns only once the writer has let go of its connection
    writer.join(5)
    assert not writer.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], IndexClosed)
    with pytest.raises(IndexClosed):
        index.paths()
    # The refresh was rolled back, and a new index of the same file starts from a consistent state.
    again = ProjectIndex(root, tmp_path / "idx.sqlite")
    assert again.file_count() == 0
    again.refresh()
    assert again.file_count() == 20
    again.close()
