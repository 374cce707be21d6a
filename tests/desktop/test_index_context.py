from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from desktop.project.context import ContextRequest, assemble, estimate_tokens
from desktop.project.index import ProjectIndex
from shared.errors import InputError


@pytest.fixture
def index(fixture_project: Path, tmp_path: Path) -> Iterator[ProjectIndex]:
    ix = ProjectIndex(fixture_project, tmp_path / "cache" / "ix.sqlite")
    ix.refresh()
    yield ix
    ix.close()


def test_index_holds_text_files_only(index: ProjectIndex, fixture_project: Path) -> None:
    paths = index.paths()
    assert "src/shop/cart.py" in paths and "web/app.js" in paths
    assert "data.txt" not in paths  # NUL byte: binary
    assert ".env" not in paths and "build/out.py" not in paths
    expected = hashlib.sha256((fixture_project / "src/shop/cart.py").read_bytes()).hexdigest()
    assert index.file_sha256("src/shop/cart.py") == expected


def test_search_returns_line_ranges(index: ProjectIndex) -> None:
    hits = index.search("where is unit_price defined")
    assert hits[0].path in ("src/shop/prices.py", "src/shop/cart.py")
    assert {h.path for h in hits} >= {"src/shop/prices.py", "src/shop/cart.py"}
    assert all(h.start_line == 1 and h.end_line >= 1 for h in hits)
    assert index.search("the and for") == []


def test_definitions(index: ProjectIndex) -> None:
    [hit] = index.definitions(["unit_price"])
    assert (hit.path, hit.line) == ("src/shop/prices.py", 4)
    assert [h.name for h in index.definitions(["renderCart", "Cart"])] == ["renderCart", "Cart"]


def test_refresh_is_incremental(index: ProjectIndex, fixture_project: Path) -> None:
    again = index.refresh()
    assert (again.added, again.changed, again.removed) == (0, 0, 0)
    cart = fixture_project / "src/shop/cart.py"
    cart.write_text(cart.read_text() + "\n    def clear(self) -> None:\n        self.items = []\n")
    (fixture_project / "web/app.js").unlink()
    (fixture_project / "src/shop/tax.py").write_text("def vat(amount):\n    return amount * 0.2\n")
    stats = index.refresh()
    assert (stats.added, stats.changed, stats.removed) == (1, 1, 1)
    assert [h.path for h in index.definitions(["clear"])] == ["src/shop/cart.py"]
    assert index.definitions(["renderCart"]) == []
    assert index.search("vat")[0].path == "src/shop/tax.py"
    # Touching a file without changing it re-stamps it, nothing more.
    os.utime(fixture_project / "src/shop/tax.py", ns=(1, 1))
    touched = index.refresh()
    assert (touched.added, touched.changed) == (0, 0)


def test_index_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        ProjectIndex(tmp_path / "nope", tmp_path / "ix.sqlite")


def test_context_lists_what_it_uses_by_reason(index: ProjectIndex, fixture_project: Path) -> None:
    (fixture_project / "NOTES.md").write_text("Release checklist: bump the version.\n")
    index.refresh()
    text = (fixture_project / "src/shop/cart.py").read_text()
    request = ContextRequest(
        question="why does total ignore unknown items",
        current_path="src/shop/cart.py",
        current_text=text,
        cursor_line=13,
        selection=(13, 14),
        visible=(1, 14),
        recent_paths=["NOTES.md", "src/shop/cart.py"],
    )
    ctx = assemble(index, request, budget=2000)
    reasons = {(i.path, i.reason) for i in ctx.items}
    assert ("src/shop/cart.py", "selection") in reasons
    assert ("src/shop/cart.py", "cursor") in reasons
    assert ("src/shop/prices.py", "definition") in reasons  # unit_price is used in view
    assert ("NOTES.md", "recent") in reasons
    # Nothing is sent twice: each file's line ranges are disjoint.
    for path in {i.path for i in ctx.items}:
        spans = sorted((i.start_line, i.end_line) for i in ctx.items if i.path == path)
        assert all(a[1] < b[0] or a[0] > b[1] or a == b for a, b in itertools.pairwise(spans))
    selection = next(i for i in ctx.items if i.reason == "selection")
    assert (selection.start_line, selection.end_line) == (13, 14)
    assert selection.text == "\n".join(text.split("\n")[12:14])
    definition = next(i for i in ctx.items if i.reason == "definition")
    assert (definition.start_line, definition.end_line) == (4, 6)
    assert ctx.tokens <= ctx.budget
    assert dict(ctx.files())["src/shop/prices.py"] == index.file_sha256("src/shop/prices.py")
    assert "File src/shop/prices.py, lines 4-6:" in ctx.render()


def test_context_stays_within_a_small_budget(index: ProjectIndex, fixture_project: Path) -> None:
    text = (fixture_project / "src/shop/cart.py").read_text()
    request = ContextRequest("total unit_price", "src/shop/cart.py", text, 10, None, None, ())
    small = assemble(index, request, budget=40)
    assert small.items and small.tokens <= 40
    big = assemble(index, request, budget=4000)
    assert big.tokens > small.tokens
    assert sum(estimate_tokens(i.text) for i in big.items) == big.tokens


def test_removing_an_item(index: ProjectIndex) -> None:
    ctx = assemble(index, ContextRequest("unit_price Cart renderCart"), budget=3000)
    assert len(ctx.items) >= 2
    fewer = ctx.without(0)
    assert fewer.items == ctx.items[1:]


def test_an_index_from_another_version_is_rebuilt(fixture_project: Path, tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.sqlite"
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE symbols (name TEXT, kind TEXT, path TEXT, line INT, end_line INT NOT NULL)")
    old.execute("CREATE TABLE files (path TEXT PRIMARY KEY, size INT, mtime_ns INT, sha256 TEXT, line_count INT)")
    old.execute("INSERT INTO files VALUES ('src/shop/cart.py', 1, 1, 'x', 1)")
    old.commit()
    old.close()
    ix = ProjectIndex(fixture_project, db)
    assert ix.file_count() == 0
    assert ix.refresh().added > 0 and ix.definitions(["Cart"])
    ix.close()
