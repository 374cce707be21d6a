"""Thinking mode in the client: "Think first" asks for it, and the reasoning streams folded above
the answer (a header counting it; the text behind it), then the answer streams as before."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from desktop.app import App
from desktop.ui.reasoning_view import ReasoningView
from tests.helpers.desktop_fake_appliance import FakeAppliance
from tests.helpers.desktop_flows import ask, open_file, open_project


def test_the_view_is_hidden_until_reasoning_arrives_and_folded_until_unfolded(qtbot: QtBot) -> None:
    view = ReasoningView()
    qtbot.addWidget(view)
    view.show()
    view.start()
    assert view.isHidden()
    view.append("first, ")
    view.append("then")
    assert view.isVisible() and view.folded and view.text.isHidden()
    assert view.toggle.text() == "▸ Thinking… (11 characters)"
    view.toggle.click()
    assert not view.folded and view.text.isVisible() and view.reasoning == "first, then"
    view.done()
    assert view.toggle.text() == "▾ Reasoning (11 characters)"
    view.clear()
    assert view.isHidden() and view.reasoning == "" and view.folded


def test_think_first_streams_the_reasoning_folded_above_the_answer(
    qtbot: QtBot, signed_in: App, fake: FakeAppliance, fixture_project: Path
) -> None:
    app = signed_in
    panel = app.window.workspace.panel
    seen: list[tuple[str, str]] = []
    at_first_answer_piece: list[tuple[bool, bool, str, str, bool]] = []

    def on_delta(text: str) -> None:
        if not any(kind == "content" for kind, _ in seen):
            view = panel.reasoning
            at_first_answer_piece.append(
                (view.isVisible(), view.folded, view.toggle.text(), view.reasoning, panel.answer_text == text)
            )
        seen.append(("content", text))

    app.generation.reasoning.connect(lambda text: seen.append(("reasoning", text)))
    app.generation.delta.connect(on_delta)
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/cart.py")
    app.window.workspace.side.setCurrentWidget(panel)
    panel.think.setChecked(True)
    ask(qtbot, app, "explain the cart")
    assert fake.requests[-1]["thinking"] == {"type": "enabled"}
    kinds = [kind for kind, _ in seen]
    assert kinds == sorted(kinds, reverse=True) and "reasoning" in kinds and "content" in kinds
    # While the answer began to stream the reasoning was all there, folded, counted in its header.
    visible, folded, header, reasoning, only_the_first_piece = at_first_answer_piece[0]
    assert visible and folded and only_the_first_piece
    assert reasoning == fake.reasoning and header == f"▸ Thinking… ({len(fake.reasoning)} characters)"
    layout = panel.layout()
    assert layout.indexOf(panel.reasoning) < layout.indexOf(panel.answer)
    assert panel.answer_text == fake.answer and panel.reasoning.toggle.text().startswith("▸ Reasoning")
    # Without "Think first" nothing is asked and nothing shows.
    panel.think.setChecked(False)
    ask(qtbot, app, "explain the cart again")
    assert "thinking" not in fake.requests[-1] and panel.reasoning.isHidden()
