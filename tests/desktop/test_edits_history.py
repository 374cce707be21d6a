from __future__ import annotations

import datetime as dt
from pathlib import Path

from desktop.project.edits import Applied, Conflict, apply, code_blocks, propose, replace_lines, undo
from desktop.project.history import HistoryStore


def test_apply_undo_and_conflicts(tmp_path: Path) -> None:
    f = tmp_path / "a.py"
    f.write_text("one\ntwo\nthree\n")
    p = propose(tmp_path, "a.py", "one\n2\nthree\n")
    assert "-two\n+2\n" in p.diff()
    done = apply(p)
    assert isinstance(done, Applied) and f.read_text() == "one\n2\nthree\n"
    back = undo(done)
    assert isinstance(back, Applied) and f.read_text() == "one\ntwo\nthree\n"

    stale = propose(tmp_path, "a.py", "ONE\ntwo\nthree\n")
    f.write_text("one\ntwo\nthree\nfour\n")  # someone else edits the file meanwhile
    clash = apply(stale)
    assert isinstance(clash, Conflict)
    assert f.read_text() == "one\ntwo\nthree\nfour\n"  # nothing overwritten
    assert "+four" in clash.diff()
    forced = apply(stale, force=True)
    assert isinstance(forced, Applied) and f.read_text() == "ONE\ntwo\nthree\n"

    # Undo refuses too when the file changed after the edit was applied.
    f.write_text("edited again\n")
    refused = undo(forced)
    assert isinstance(refused, Conflict) and refused.undoing
    assert f.read_text() == "edited again\n"
    assert not list(tmp_path.glob("*.enclave-tmp"))


def test_propose_refuses_paths_outside_the_project(tmp_path: Path) -> None:
    import pytest

    from shared.errors import InputError

    with pytest.raises(InputError, match="outside the project"):
        propose(tmp_path / "p", "../escape.py", "x")


def test_code_blocks_and_replace_lines() -> None:
    answer = "Here:\n```python\ndef f():\n    return 2\n```\nand\n```\nlast\n```\n"
    assert code_blocks(answer) == ["def f():\n    return 2", "last"]
    assert code_blocks("```py\nunclosed") == ["unclosed"]
    assert replace_lines("a\nb\nc\nd", (2, 3), "X\nY\nZ") == "a\nX\nY\nZ\nd"
    assert replace_lines("a\nb\n", None, "new") == "new\n"


def test_history_per_project(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "data" / "history.sqlite")
    at = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
    store.add("p1", "m", "why?", "because", ["a.py:1-3"], at=at)
    store.add("p2", "m", "other", "x", [], at=at)
    store.add("p1", "m", "how?", "like this", [], at=at + dt.timedelta(minutes=1))
    entries = store.list("p1")
    assert [e.question for e in entries] == ["how?", "why?"]
    assert entries[1].context == ["a.py:1-3"] and entries[1].at == at
    store.close()
    reopened = HistoryStore(tmp_path / "data" / "history.sqlite")
    assert len(reopened.list("p1")) == 2
    reopened.close()
