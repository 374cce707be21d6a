"""Issue #15 failure 4: inline completion in a file larger than the model's context is trimmed to the
context /v1/models reports, a refusal is retried trimmed or shown in the status bar (never a blank), and
ghost text shows only after typing and a pause — never on opening a file, never over code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from desktop.app import App
from tests.helpers.desktop_fake_appliance import FakeAppliance
from tests.helpers.desktop_flows import (
    WAIT_MS,
    confirm_and_connect,
    connect,
    open_file,
    open_project,
    sign_in,
)
from tests.helpers.desktop_tls import make_ca

URL = "https://appliance.test:8443"


@pytest.fixture
def big_project(fixture_project: Path) -> Path:
    # ~12 KB of Python: 7,000 tokens by the fake's two-characters-a-token count, over its 4,096.
    lines = [f"def f{i}(x):\n    return x + {i}  # some filler text here\n" for i in range(260)]
    (fixture_project / "src" / "shop" / "big.py").write_text("".join(lines))
    return fixture_project


def _app(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path, root: Path) -> App:
    app = make_app(client_factory=fake.client_factory, completion_pause_ms=30)
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    sign_in(qtbot, app, "dev", "pw")
    open_project(qtbot, app, root)
    open_file(qtbot, app, "src/shop/big.py")
    return app


def _middle(app: App) -> None:
    editor = app.window.workspace.editor
    cursor = editor.textCursor()
    block = editor.document().findBlockByNumber(260)
    cursor.setPosition(block.position() + block.length() - 1)  # end of a line in the middle of the file
    editor.setTextCursor(cursor)


def test_completion_fits_the_reported_context(qtbot: QtBot, make_app: Callable[..., App], tmp_path: Path, big_project: Path) -> None:
    fake = FakeAppliance()
    fake.context_limit = fake.reported_context = 4096
    app = _app(qtbot, make_app, fake, tmp_path, big_project)
    assert app.connection.session is not None and app.connection.session.context_lengths == {"deepseek-v4-demo": 4096}
    _middle(app)
    editor = app.window.workspace.editor
    with qtbot.waitSignal(app.completion.completed, timeout=WAIT_MS):
        qtbot.keyClicks(editor, "z")
    sent = fake.requests[-1]
    assert sent["prompt"].endswith("z") and 0 < len(sent["prompt"]) + len(sent["suffix"]) < len(editor.toPlainText())
    assert (len(sent["prompt"]) + len(sent["suffix"])) // 2 + sent["max_tokens"] <= 4096
    qtbot.waitUntil(lambda: editor.ghost == "_total = 0", timeout=WAIT_MS)


def test_a_refusal_is_retried_trimmed_and_said(qtbot: QtBot, make_app: Callable[..., App], tmp_path: Path, big_project: Path) -> None:
    fake = FakeAppliance()
    fake.context_limit = 600  # less than /v1/models says (8192): the client learns it from the 400
    app = _app(qtbot, make_app, fake, tmp_path, big_project)
    _middle(app)
    editor = app.window.workspace.editor
    with qtbot.waitSignal(app.completion.completed, timeout=WAIT_MS):
        qtbot.keyClicks(editor, "z")
    assert "The model takes 600 tokens" in app.window.statusBar().currentMessage()
    qtbot.waitUntil(lambda: editor.ghost == "_total = 0", timeout=WAIT_MS)


def test_a_failed_completion_is_shown_in_the_status_bar(qtbot: QtBot, make_app: Callable[..., App], tmp_path: Path, big_project: Path) -> None:
    fake = FakeAppliance()
    app = _app(qtbot, make_app, fake, tmp_path, big_project)
    fake.reachable = False
    editor = app.window.workspace.editor
    editor.moveCursor(editor.textCursor().MoveOperation.End)
    with qtbot.waitSignal(app.completion.failed, timeout=WAIT_MS):
        qtbot.keyClicks(editor, "z")
    assert app.window.statusBar().currentMessage().startswith("Inline completion failed: ")
    assert editor.ghost == ""


def test_no_ghost_on_open_or_over_code(qtbot: QtBot, make_app: Callable[..., App], tmp_path: Path, big_project: Path) -> None:
    fake = FakeAppliance()
    app = _app(qtbot, make_app, fake, tmp_path, big_project)
    editor = app.window.workspace.editor
    qtbot.keyClicks(editor, "q")  # a pause is pending in big.py ...
    open_file(qtbot, app, "src/shop/cart.py")  # ... and the user opens another file
    asked = len(fake.requests)
    qtbot.wait(200)
    assert editor.ghost == "" and len(fake.requests) == asked
    # Mid-line (code to the right of the cursor): the answer is not drawn over it.
    cursor = editor.textCursor()
    cursor.setPosition(editor.document().findBlockByNumber(3).position() + 2)
    editor.setTextCursor(cursor)
    with qtbot.waitSignal(app.completion.completed, timeout=WAIT_MS):
        qtbot.keyClicks(editor, "k")
    qtbot.wait(50)
    assert editor.ghost == ""
