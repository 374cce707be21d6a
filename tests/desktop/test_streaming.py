"""Failure 6: an answer streams on screen. Each piece is painted before the next one is sent (the fake
appliance holds the stream until the answer view has painted it), and the newest text stays in view
while the answer grows past the panel's height."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from pytestqt.qtbot import QtBot

from desktop.app import App
from desktop.qt import QEvent, QObject
from tests.helpers.desktop_fake_appliance import FakeAppliance
from tests.helpers.desktop_flows import ask, open_file, open_project

PIECES = [f"Step {i:02d} of the answer.\n\n" for i in range(40)]
HOLD_S = 10.0  # how long the stream waits for a paint before it records a miss and carries on


class _Paints(QObject):
    """Records, at every paint of the answer view, the text it shows and whether its end is in view."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self.answer = app.window.workspace.panel.answer
        self.painted: list[str] = []
        self.end_in_view: list[bool] = []
        self.cond = threading.Condition()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            text = self.answer.toPlainText()
            bar = self.answer.verticalScrollBar()
            with self.cond:
                self.painted.append(text)
                self.end_in_view.append(bar.value() == bar.maximum())
                self.cond.notify_all()
        return False

    def wait_for(self, piece: str) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: any(piece.strip() in t for t in self.painted), HOLD_S)


def test_each_piece_is_painted_before_the_next_arrives(
    qtbot: QtBot, signed_in: App, fake: FakeAppliance, fixture_project: Path,
) -> None:
    app = signed_in
    paints = _Paints(app)
    app.window.workspace.panel.answer.viewport().installEventFilter(paints)
    fake.answer = "".join(PIECES)
    fake.chunk_chars = len(PIECES[0])
    missed: list[int] = []

    def pace(frames: list[bytes]) -> Iterator[bytes]:
        for i, frame in enumerate(frames):
            yield frame
            if i < len(PIECES) and not paints.wait_for(PIECES[i]):
                missed.append(i)

    fake.pace = pace
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/cart.py")
    app.window.workspace.side.setCurrentWidget(app.window.workspace.panel)
    ask(qtbot, app, "explain the cart")
    assert not missed, f"pieces {missed} were not painted before the next one was sent"
    answer = app.window.workspace.panel.answer
    assert answer.verticalScrollBar().maximum() > 0  # the answer is taller than its view
    # Once the answer overflowed, every paint still showed its end: the new text was in view.
    overflowed = [ok for text, ok in zip(paints.painted, paints.end_in_view, strict=True) if "Step 30" in text]
    assert overflowed and all(overflowed)
    assert answer.toPlainText().count("Step") == len(PIECES)
