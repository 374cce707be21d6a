"""FIM trimming around the cursor (shared by the editor and the language server), the never-sent
rule for buffers and context, and the request builders."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from desktop.client.prompts import build_fim_request
from desktop.project.context import Context, ContextItem, estimate_tokens, sendable
from desktop.project.fim import fim_window
from desktop.project.ignore import IgnoreRules


def _lines(n: int, tag: str) -> str:
    return "\n".join(f"{tag} line {i:04d} = value_{i}" for i in range(n))


def test_short_text_is_kept_whole() -> None:
    assert fim_window("def f(x):\n    return ", "\n\nprint(f(1))\n", budget=100) == ("def f(x):\n    return ", "\n\nprint(f(1))\n")


def test_long_text_keeps_the_lines_nearest_the_cursor() -> None:
    prefix = _lines(500, "before") + "\n    partial = "
    suffix = " + 1\n" + _lines(500, "after")
    before, after = fim_window(prefix, suffix, budget=200)
    assert before.endswith("before line 0499 = value_499\n    partial = ")
    assert after.startswith(" + 1\nafter line 0000")
    assert estimate_tokens(before) + estimate_tokens(after) <= 200
    # Whole lines: the first kept line of the prefix is one of the original lines, not a tail of one.
    assert before.split("\n")[0] in prefix.split("\n")
    assert after.split("\n")[-1] in suffix.split("\n")
    # The suffix takes about its share, the prefix the rest.
    assert estimate_tokens(after) <= 50 < estimate_tokens(before)


def test_what_one_side_leaves_flows_to_the_other() -> None:
    before, after = fim_window("x = ", _lines(500, "after"), budget=200)
    assert before == "x = " and estimate_tokens(after) > 150
    before, after = fim_window(_lines(500, "before"), "", budget=200)
    assert after == "" and estimate_tokens(before) > 150


def test_a_giant_cursor_line_is_cut_next_to_the_cursor() -> None:
    before, after = fim_window("a" * 10_000 + "CURSOR", "TAIL" + "b" * 10_000, budget=100)
    assert before.endswith("aCURSOR") and after.startswith("TAILb")
    assert estimate_tokens(before) + estimate_tokens(after) <= 100


@given(st.text(max_size=3000), st.text(max_size=3000), st.integers(1, 400))
def test_always_within_budget_and_adjacent_to_the_cursor(prefix: str, suffix: str, budget: int) -> None:
    before, after = fim_window(prefix, suffix, budget=budget)
    assert prefix.endswith(before) and suffix.startswith(after)
    assert estimate_tokens(before) + estimate_tokens(after) <= budget + 1


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError):
        fim_window("a", "b", budget=0)


def test_fim_request_carries_context_files_and_trimmed_window() -> None:
    item = ContextItem("src/prices.py", 1, 2, "definition", "def unit_price(sku):\n    return 1", "ab" * 32)
    req = build_fim_request(
        "m", _lines(300, "p"), _lines(300, "s"), budget=120, context=Context(100, [item]),
        current_path="src/cart.py", project_id="p1",
    )
    assert req.prompt.startswith("# src/prices.py\ndef unit_price(sku):\n    return 1\n# src/cart.py\n")
    assert req.enclave is not None and req.enclave.project_id == "p1"
    assert [(f.path, f.sha256) for f in req.enclave.context_files] == [("src/prices.py", "ab" * 32)]
    assert estimate_tokens(req.prompt) < 200 and req.stream and req.temperature == 0.0


def test_never_sent_covers_secrets_policy_and_their_directories(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("build/\n")
    rules = IgnoreRules(tmp_path, policy_patterns=["internal/"])
    assert rules.never_sent(".env") and rules.never_sent("deploy/server.pem")
    assert rules.never_sent(".ssh/config") and rules.never_sent("internal/keys.py")
    assert not rules.never_sent("src/app.py")
    assert not rules.never_sent("build/out.py")  # ignored by git: not indexed, but the user may open it
    items = [ContextItem(p, 1, 1, "recent", "x", "0" * 64) for p in ("src/app.py", "internal/keys.py", ".env")]
    assert [i.path for i in sendable(Context(100, items), rules).items] == ["src/app.py"]
