"""Failure 7: the change applied is the answer's code block, re-indented to where it goes, without
control characters, and the diff shown is byte for byte what is written (``git apply`` agrees)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from desktop.app import App
from desktop.project.edits import Applied, Proposal, apply, propose, replace_lines
from desktop.project.extract import code_blocks, extract_code, reindent, strip_controls
from desktop.qt import QTextCursor
from desktop.services.edits import EditService
from shared.errors import InputError
from tests.helpers.desktop_flows import ask, open_file, open_project, select_lines

TARGET = (
    "\x0cclass Cart:\n"
    "    def __init__(self) -> None:\n"
    "        self.items = []\n"
    "\n"
    "    def total(self) -> float:\n"
    "        return 0.0\n"
    "\n"
    "    def count(self) -> int:\n"
    "        return len(self.items)\n"
)

ANSWER = (
    "Sure. First the idea in shell:\n\n"
    "```sh\necho no\n```\n\n"
    "Then the method (note the form feed and the carriage return the model emitted):\n\n"
    "```python\n"
    "def total(self) -> float:\r\n"
    "    # sum of the line prices\x0c\n"
    "    return sum(\x1b[31mp * q for p, q in self.items)\u200b\n"
    "```\n"
    "Hope it helps.\n"
)


def test_the_block_in_the_files_language_is_chosen_stripped_and_reindented() -> None:
    got = extract_code(ANSWER, path="src/shop/cart.py", indent="    ")
    assert got.code == (
        "    def total(self) -> float:\n"
        "        # sum of the line prices\n"
        "        return sum([31mp * q for p, q in self.items)"
    )
    assert got.from_block and got.blocks == 2 and got.removed_controls == 3
    assert "control characters removed" in got.note()
    # Another language's file takes the last block whatever its language.
    assert extract_code(ANSWER, path="web/app.js").code.startswith("def total")
    # No fence at all: the whole text, said so.
    plain = extract_code("x = 1\n", path="a.py")
    assert plain.code == "x = 1" and not plain.from_block and "no code block" in plain.note()


def test_fences_tildes_long_fences_and_list_items() -> None:
    answer = "1. Change it:\n   ```python\n   if x:\n       y()\n   ```\n\n~~~~\nraw ``` inside\n~~~~\n"
    assert code_blocks(answer) == ["if x:\n    y()", "raw ``` inside"]
    assert code_blocks("```py\nunclosed") == ["unclosed"]


def test_reindent_keeps_relative_indentation_and_blank_lines_carry_none() -> None:
    assert reindent("        a\n\n            b   \n        c", "\t") == "\ta\n\n\t    b\n\tc"
    assert strip_controls("a\r\nb\rc\x00d\u202e") == ("a\nb\ncd", 2)


def test_apply_refuses_control_characters_the_edit_would_add(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("page one\x0cpage two\n")  # already there: fine to keep
    kept = propose(tmp_path, "a.py", "page one\x0cpage 2\n")
    assert isinstance(apply(kept), Applied)
    added = Proposal(kept.root, "a.py", "page one\x0cpage 2\n", "x = '\x07'\n")
    with pytest.raises(InputError, match=r"U\+0007"):
        apply(added)
    assert (tmp_path / "a.py").read_text() == "page one\x0cpage 2\n"


@pytest.mark.skipif(shutil.which("git") is None, reason="git applies the shown diff")
@pytest.mark.parametrize("final_newline", [True, False])
def test_the_diff_shown_is_what_is_applied(qtbot: object, tmp_path: Path, final_newline: bool) -> None:
    project = tmp_path / "p"
    project.mkdir()
    text = TARGET if final_newline else TARGET.rstrip("\n")
    (project / "cart.py").write_text(text)
    service = EditService()
    proposals: list[Proposal] = []
    service.proposed.connect(proposals.append)
    # Lines 5-6 (the whole total method); the form feed on line 1 made splitlines count one line more.
    service.propose(project, "cart.py", (5, 6), ANSWER)
    (proposal,) = proposals
    assert proposal.after == replace_lines(text, (5, 6), extract_code(ANSWER, path="cart.py", indent="    ").code)
    shown = proposal.diff()
    assert "@@ -3,7 +3,8 @@" in shown  # str.splitlines saw the form feed as a line end: -4,7 +4,8
    assert "        return sum(" in shown and "\x0c" not in shown and "\r" not in shown
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "cart.py").write_text(text)
    (copy / "shown.diff").write_text(shown)
    service.apply(proposal)
    # The diff as shown, applied by git to the file as it was, gives the file as written: same bytes.
    subprocess.run(["git", "apply", "--unsafe-paths", "shown.diff"], cwd=copy, check=True, capture_output=True)
    assert (copy / "cart.py").read_bytes() == (project / "cart.py").read_bytes()


def test_the_workspace_proposes_against_the_saved_file_reindented_to_the_selection(
    qtbot: QtBot, signed_in: App, fixture_project: Path,
) -> None:
    app = signed_in
    ws = app.window.workspace
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/cart.py")
    select_lines(app, 13, 14)  # the total method, indented by four spaces
    ask(qtbot, app, "skip non-positive quantities")
    ws.editor.moveCursor(QTextCursor.MoveOperation.End)
    ws.editor.insertPlainText("# not saved yet\n")
    ws.panel.propose.click()
    assert "Save src/shop/cart.py first" in ws.panel.status.text() and ws.proposal_view.proposal is None
    ws.save()
    with qtbot.waitSignal(app.edits.proposed, timeout=20_000):
        ws.panel.propose.click()
    proposal = ws.proposal_view.proposal
    assert proposal is not None
    # The answer's block is indented by eight spaces; it lands at the selection's four.
    assert "\n    return sum(unit_price(sku) * q for sku, q in self.items if q > 0)\n" in proposal.after
    assert proposal.before.endswith("# not saved yet\n") and ws.proposal_view.diff.toPlainText() == proposal.diff()
