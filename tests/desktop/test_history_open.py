"""Failure 8 (rest): a history entry opens — its question, answer and the context it was sent with
come back in the generation panel, and its answer can be proposed as an edit again."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from desktop.app import App
from tests.helpers.desktop_fake_appliance import FakeAppliance
from tests.helpers.desktop_flows import ask, open_file, open_project


def test_a_history_entry_opens_and_can_be_proposed_again(
    qtbot: QtBot, signed_in: App, fake: FakeAppliance, fixture_project: Path,
) -> None:
    app = signed_in
    ws = app.window.workspace
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/cart.py")
    ask(qtbot, app, "first question")
    sent = [f"{i.path}:{i.start_line}-{i.end_line}" for i in ws.context.items] if ws.context else []
    fake.answer = "something else entirely"
    ask(qtbot, app, "second question")
    qtbot.waitUntil(lambda: ws.history_list.count() == 2, timeout=20_000)
    item = ws.history_list.item(1)  # newest first: this is the first question
    assert item is not None and "first question" in item.text()
    ws.history_list.itemActivated.emit(item)
    panel = ws.panel
    assert panel.question.toPlainText() == "first question"
    assert "unit_price" in panel.answer.toPlainText() and panel.answer_text.startswith("Use `unit_price`")
    assert [panel.context_list.item(i).text() for i in range(panel.context_list.count())] == sent
    assert "From the history" in panel.status.text() and ws.side.currentWidget() is panel
    assert ws.context is None  # Send gathers fresh context rather than sending a stale list
    with qtbot.waitSignal(app.edits.proposed, timeout=20_000):
        panel.propose.click()
    assert "unit_price(sku) * q for sku, q in self.items if q > 0" in ws.proposal_view.diff.toPlainText()
