"""The UI flows against the in-process fake appliance (fast); test_e2e_appliance.py runs the same
flows against the real appliance."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from pytestqt.qtbot import QtBot

from desktop.app import App
from desktop.client.tls import ca_fingerprint
from desktop.qt import QKeyEvent, Qt, QTableWidget
from desktop.services.generation import build_chat_request
from desktop.ui.dialogs import SignInDialog
from tests.helpers.desktop_fake_appliance import FakeAppliance
from tests.helpers.desktop_flows import (
    ask,
    confirm_and_connect,
    connect,
    open_file,
    open_project,
    select_lines,
    sign_in,
)
from tests.helpers.desktop_keyring import MemoryKeyring
from tests.helpers.desktop_tls import make_ca

URL = "https://appliance.test:8443"


def _cell(table: QTableWidget, row: int, col: int) -> str:
    item = table.item(row, col)
    assert item is not None
    return item.text()


def test_first_connection_shows_fingerprint_and_sign_in_stores_token_in_keyring(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    ca = make_ca()
    app = make_app(client_factory=fake.client_factory)
    dialog = connect(qtbot, app, URL, str(ca.write(tmp_path / "ca.pem")))
    assert dialog.fingerprint.text() == ca_fingerprint(ca.pem)
    assert not dialog.connect_button.isEnabled()  # not before the user confirms
    confirm_and_connect(qtbot, app, dialog)
    assert app.connection.profile is not None and app.connection.profile.url == URL
    signin = sign_in(qtbot, app, "dev", "pw")
    assert signin.password.text() == ""
    [(service, url)] = memory_keyring.secrets
    token = memory_keyring.secrets[(service, url)]
    assert url == URL and token in fake.tokens
    # The token is in the keyring and nowhere on disk.
    assert not any(token in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())
    assert not app.window.tabs.isTabVisible(app.window.audit_index)  # a developer has no audit console

    with qtbot.waitSignal(app.connection.signedOut, timeout=20_000):
        app.window.action_sign_out.trigger()
    assert memory_keyring.secrets == {}
    assert fake.tokens == {}


def test_wrong_password_keeps_what_was_typed(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path) -> None:
    app = make_app(client_factory=fake.client_factory)
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    dialog = app.window.show_sign_in()
    dialog.username.setText("dev")
    dialog.password.setText("nope")
    with qtbot.waitSignal(app.connection.failed, timeout=20_000):
        qtbot.mouseClick(dialog.sign_in, Qt.MouseButton.LeftButton)
    assert "wrong user name or password" in dialog.error.text()
    assert (dialog.username.text(), dialog.password.text()) == ("dev", "nope")
    assert dialog.isVisible() and dialog.sign_in.isEnabled()


def test_restart_signs_in_with_the_stored_token(
    qtbot: QtBot, signed_in: App, make_app: Callable[..., App], fake: FakeAppliance
) -> None:
    again = make_app(client_factory=fake.client_factory)
    with qtbot.waitSignal(again.connection.signedIn, timeout=20_000):
        assert again.connection.restore()
    assert again.connection.session is not None and again.connection.session.models == ["deepseek-v4-demo"]


def test_ask_streams_the_answer_with_the_context_shown_and_sent(
    qtbot: QtBot, signed_in: App, fake: FakeAppliance, fixture_project: Path
) -> None:
    app = signed_in
    ws = app.window.workspace
    open_project(qtbot, app, fixture_project)
    assert "files indexed" in ws.index_status.text()
    open_file(qtbot, app, "src/shop/cart.py")
    select_lines(app, 13, 14)
    deltas: list[str] = []
    app.generation.delta.connect(deltas.append)
    ask(qtbot, app, "why does total ignore unknown items")
    assert len(deltas) > 3 and "".join(deltas) == fake.answer  # streamed in pieces
    assert "unit_price" in ws.panel.answer.toPlainText()
    # The code block is rendered as code, not shown as raw fences.
    assert "```" not in ws.panel.answer.toPlainText()
    labels = [ws.panel.context_list.item(i).text() for i in range(ws.panel.context_list.count())]
    assert any(label.startswith("src/shop/cart.py:13-14 (selection)") for label in labels)
    sent = fake.requests[-1]
    assert ws.context is not None
    assert [f["path"] for f in sent["enclave"]["context_files"]] == [p for p, _ in ws.context.files()]
    assert sent["enclave"]["project_id"] == app.project.project_id
    assert "File src/shop/prices.py" in sent["messages"][1]["content"]
    qtbot.waitUntil(lambda: ws.history_list.count() == 1, timeout=20_000)


def test_removed_context_items_are_not_sent(qtbot: QtBot, signed_in: App, fake: FakeAppliance, fixture_project: Path) -> None:
    app = signed_in
    ws = app.window.workspace
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/cart.py")
    ws.panel.question.setPlainText("unit_price")
    with qtbot.waitSignal(app.project.contextReady, timeout=20_000):
        qtbot.mouseClick(ws.panel.prepare, Qt.MouseButton.LeftButton)
    before = ws.panel.context_list.count()
    paths = [i.path for i in ws.context.items] if ws.context else []
    assert "src/shop/prices.py" in paths
    for row in reversed(range(before)):
        if ws.context and ws.context.items[row].path == "src/shop/prices.py":
            ws.panel.context_list.setCurrentRow(row)
            qtbot.keyClick(ws.panel.context_list, Qt.Key.Key_Delete)
    assert ws.panel.context_list.count() < before
    with qtbot.waitSignal(app.generation.finished, timeout=20_000):
        qtbot.mouseClick(ws.panel.send, Qt.MouseButton.LeftButton)
    sent = fake.requests[-1]
    assert "src/shop/prices.py" not in [f["path"] for f in sent["enclave"]["context_files"]]
    assert "File src/shop/prices.py" not in sent["messages"][1]["content"]


def test_proposed_edit_apply_undo_and_conflict(qtbot: QtBot, signed_in: App, fixture_project: Path) -> None:
    app = signed_in
    ws = app.window.workspace
    cart = fixture_project / "src/shop/cart.py"
    original = cart.read_text()
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/cart.py")
    select_lines(app, 14, 14)
    ask(qtbot, app, "skip zero quantities")
    with qtbot.waitSignal(app.edits.proposed, timeout=20_000):
        qtbot.mouseClick(ws.panel.propose, Qt.MouseButton.LeftButton)
    view = ws.proposal_view
    assert "+        return sum(unit_price(sku) * q for sku, q in self.items if q > 0)" in view.diff.toPlainText()
    assert cart.read_text() == original  # nothing written before Apply
    with qtbot.waitSignal(app.edits.applied, timeout=20_000):
        qtbot.mouseClick(view.apply, Qt.MouseButton.LeftButton)
    assert "if q > 0" in cart.read_text()
    assert "if q > 0" in ws.editor.toPlainText()
    with qtbot.waitSignal(app.edits.undone, timeout=20_000):
        qtbot.mouseClick(view.undo, Qt.MouseButton.LeftButton)
    assert cart.read_text() == original

    # Propose again, then someone changes the file on disk: Apply shows a conflict, writes nothing.
    with qtbot.waitSignal(app.edits.proposed, timeout=20_000):
        qtbot.mouseClick(ws.panel.propose, Qt.MouseButton.LeftButton)
    cart.write_text(original + "# edited elsewhere\n")
    with qtbot.waitSignal(app.edits.conflict, timeout=20_000):
        qtbot.mouseClick(view.apply, Qt.MouseButton.LeftButton)
    assert cart.read_text() == original + "# edited elsewhere\n"
    assert "Conflict" in view.title.text() and "+# edited elsewhere" in view.diff.toPlainText()
    assert view.repropose.isVisibleTo(view)
    with qtbot.waitSignal(app.edits.proposed, timeout=20_000):
        qtbot.mouseClick(view.repropose, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(app.edits.applied, timeout=20_000):
        qtbot.mouseClick(view.apply, Qt.MouseButton.LeftButton)
    assert "if q > 0" in cart.read_text() and "# edited elsewhere" in cart.read_text()


def test_inline_completion_tab_esc_and_typing_on(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path, fixture_project: Path) -> None:
    app = make_app(client_factory=fake.client_factory, completion_pause_ms=50)
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    sign_in(qtbot, app, "dev", "pw")
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/prices.py")
    editor = app.window.workspace.editor
    editor.moveCursor(editor.textCursor().MoveOperation.End)
    with qtbot.waitSignal(app.completion.completed, timeout=20_000):
        qtbot.keyClicks(editor, "x")
    qtbot.waitUntil(lambda: editor.ghost == "_total = 0", timeout=20_000)
    sent = fake.requests[-1]
    assert sent["prompt"].endswith("x") and sent["suffix"] == ""
    qtbot.keyClick(editor, Qt.Key.Key_Escape)
    assert editor.ghost == "" and editor.toPlainText().endswith("x")
    with qtbot.waitSignal(app.completion.completed, timeout=20_000):
        qtbot.keyClicks(editor, "y")
    qtbot.waitUntil(lambda: bool(editor.ghost), timeout=20_000)
    qtbot.keyClick(editor, Qt.Key.Key_Tab)
    assert editor.toPlainText().endswith("xy_total = 0") and editor.ghost == ""
    # Typing on cancels: a late answer to an old request is never shown.
    with qtbot.waitSignal(app.completion.completed, timeout=20_000):
        qtbot.keyClicks(editor, "z")
    qtbot.waitUntil(lambda: bool(editor.ghost), timeout=20_000)
    editor.keyPressEvent(QKeyEvent(QKeyEvent.Type.KeyPress, Qt.Key.Key_Q, Qt.KeyboardModifier.NoModifier, "q"))
    assert editor.ghost == ""
    editor.show_completion(editor._number - 1, "stale")
    assert editor.ghost == ""


def test_expired_session_asks_to_sign_in_and_keeps_the_question(
    qtbot: QtBot, signed_in: App, fake: FakeAppliance, memory_keyring: MemoryKeyring, fixture_project: Path
) -> None:
    app = signed_in
    ws = app.window.workspace
    open_project(qtbot, app, fixture_project)
    fake.tokens.clear()  # the session expires on the server
    ws.panel.question.setPlainText("my long question")
    with qtbot.waitSignal(app.generation.failed, timeout=20_000):
        qtbot.mouseClick(ws.panel.send, Qt.MouseButton.LeftButton)
    assert "Sign in" in app.window.banner_action.text() and "session has ended" in app.window.banner_text.text()
    assert ws.panel.question.toPlainText() == "my long question"
    assert memory_keyring.secrets == {}  # the dead token is gone from the keyring
    qtbot.mouseClick(app.window.banner_action, Qt.MouseButton.LeftButton)
    dialog = app.window.dialog
    assert isinstance(dialog, SignInDialog) and "session has ended" in dialog.message.text()
    dialog.password.setText("pw")
    with qtbot.waitSignal(app.connection.signedIn, timeout=20_000):
        qtbot.mouseClick(dialog.sign_in, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(app.generation.finished, timeout=20_000):
        qtbot.mouseClick(ws.panel.send, Qt.MouseButton.LeftButton)


def test_unreachable_appliance_offers_retry(qtbot: QtBot, signed_in: App, fake: FakeAppliance, fixture_project: Path) -> None:
    app = signed_in
    ws = app.window.workspace
    open_project(qtbot, app, fixture_project)
    fake.reachable = False
    ws.panel.question.setPlainText("still here?")
    with qtbot.waitSignal(app.generation.failed, timeout=20_000):
        qtbot.mouseClick(ws.panel.send, Qt.MouseButton.LeftButton)
    assert app.window.banner_action.text() == "Retry"
    assert "cannot reach the appliance" in app.window.banner_text.text()
    assert "cannot reach" in ws.panel.status.text()
    assert ws.panel.question.toPlainText() == "still here?"


def test_unreachable_on_first_connection_keeps_the_fields(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path) -> None:
    fake.reachable = False
    app = make_app(client_factory=fake.client_factory)
    ca = str(make_ca().write(tmp_path / "ca.pem"))
    dialog = connect(qtbot, app, URL, ca)
    dialog.confirm.setChecked(True)
    with qtbot.waitSignal(app.connection.failed, timeout=20_000):
        qtbot.mouseClick(dialog.connect_button, Qt.MouseButton.LeftButton)
    assert "cannot reach" in dialog.error.text() and "try again" in dialog.error.text()
    assert (dialog.url.text(), dialog.ca_path.text()) == (URL, ca)
    assert app.connection.profile is None  # nothing pinned


def test_audit_console_lists_filters_pages_verifies_exports(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path
) -> None:
    app = make_app(client_factory=fake.client_factory)
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    console = app.window.audit_console
    with qtbot.waitSignal(app.audit.page, timeout=20_000):
        sign_in(qtbot, app, "aud", "pw")
    assert app.window.tabs.isTabVisible(app.window.audit_index)
    assert not app.window.tabs.isTabVisible(app.window.admin_index)
    assert console.table.rowCount() == 50 and _cell(console.table, 0, 0) == "121"
    with qtbot.waitSignal(app.audit.page, timeout=20_000):
        qtbot.mouseClick(console.next_page, Qt.MouseButton.LeftButton)
    assert _cell(console.table, 0, 0) == "71"
    with qtbot.waitSignal(app.audit.page, timeout=20_000):
        qtbot.mouseClick(console.prev_page, Qt.MouseButton.LeftButton)
    assert _cell(console.table, 0, 0) == "121"

    console.actor.setText("user:aud")
    with qtbot.waitSignal(app.audit.page, timeout=20_000):
        qtbot.mouseClick(console.search, Qt.MouseButton.LeftButton)
    assert {_cell(console.table, r, 2) for r in range(console.table.rowCount())} == {"user:aud"}
    console.actor.clear()
    console.action.setText("admin.")
    with qtbot.waitSignal(app.audit.page, timeout=20_000):
        qtbot.mouseClick(console.search, Qt.MouseButton.LeftButton)
    assert console.table.rowCount() == 1
    console.table.selectRow(0)
    assert "role: \"auditor\" → \"developer\"" in console.detail.toPlainText()

    console.action.setText("generation.completed")
    with qtbot.waitSignal(app.audit.page, timeout=20_000):
        qtbot.mouseClick(console.search, Qt.MouseButton.LeftButton)
    console.table.selectRow(0)
    assert console.show_sealed.isEnabled()
    with qtbot.waitSignal(app.audit.sealed, timeout=20_000):
        qtbot.mouseClick(console.show_sealed, Qt.MouseButton.LeftButton)
    assert "sealed answer 119" in console.sealed_view.toPlainText()

    with qtbot.waitSignal(app.audit.verified, timeout=20_000):
        qtbot.mouseClick(console.verify, Qt.MouseButton.LeftButton)
    assert console.verify_result.text().startswith("✔ chain intact")
    # Issue #15 failure 10: the export honours the filter shown (all its pages), then the whole log.
    shown = [e for e in fake.events if e["action"] == "generation.completed"]
    for fmt in ("jsonl", "cef"):
        out = tmp_path / f"audit.{fmt}"
        with qtbot.waitSignal(app.audit.exported, timeout=20_000):
            console.export_to(str(out), fmt)
        lines = out.read_text().splitlines()
        assert len(lines) == len(shown) == 120
        if fmt == "jsonl":
            assert [json.loads(line)["seq"] for line in lines] == [e["seq"] for e in shown]
        else:
            assert lines[0].startswith("CEF:0|Enclave") and all("generation.completed" in line for line in lines)
        assert f"Exported {len(shown)} records matching the filter" in console.export_result.text()
    console.action.clear()
    for fmt in ("jsonl", "cef"):
        out = tmp_path / f"all.{fmt}"
        with qtbot.waitSignal(app.audit.exported, timeout=20_000):
            console.export_to(str(out), fmt)
        lines = out.read_text().splitlines()
        assert len(lines) == len(fake.events)
        if fmt == "jsonl":
            assert json.loads(lines[0])["seq"] == 1
        assert f"Exported {len(fake.events)} records (the whole log)" in console.export_result.text()


def test_usage_chart_counts_requests_and_tokens(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path) -> None:
    import datetime as dt

    app = make_app(client_factory=fake.client_factory)
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    sign_in(qtbot, app, "aud", "pw")
    console = app.window.audit_console
    console._clock = lambda: dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
    console.usage_days.setValue(10)
    with qtbot.waitSignal(app.audit.usage, timeout=20_000):
        qtbot.mouseClick(console.load_usage, Qt.MouseButton.LeftButton)
    expected = [e for e in fake.events if e["action"] == "generation.completed"]
    assert console.chart.totals() == (len(expected), sum(10 + e["details"]["completion_tokens"] for e in expected))
    assert console.chart.series == ["user:aud", "user:dev"]
    assert not console.chart.grab().isNull()
    # Per team needs the user list, an admin read: the auditor is told and gets per user.
    console.usage_by.setCurrentIndex(1)
    with qtbot.waitSignal(app.audit.usage, timeout=20_000):
        qtbot.mouseClick(console.load_usage, Qt.MouseButton.LeftButton)
    assert console.chart.series == ["user:aud", "user:dev"]
    assert "shown per user" in console.status.text()


def test_usage_per_day_groups_by_team() -> None:
    from desktop.services.audit import usage_per_day

    records = [
        {"action": "generation.completed", "time": "2026-11-20T10:00:00Z", "actor": "ann", "details": {"prompt_tokens": 5, "completion_tokens": 2}},
        {"action": "generation.completed", "time": "2026-11-20T23:59:59Z", "actor": "bob", "details": {"prompt_tokens": 1, "completion_tokens": 1}},
        {"action": "generation.completed", "time": "2026-11-21T00:00:00Z", "actor": "ann", "details": {"prompt_tokens": 3, "completion_tokens": 0}},
        {"action": "generation.requested", "time": "2026-11-21T00:00:00Z", "actor": "ann", "details": {"prompt_tokens": 3}},
    ]
    teams = {"ann": "red", "bob": "red"}
    by_team = usage_per_day(records, group=lambda a: teams[a])
    assert by_team == {dt.date(2026, 11, 20): {"red": (2, 9)}, dt.date(2026, 11, 21): {"red": (1, 3)}}


def test_an_admin_sees_verify_but_not_the_events(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path) -> None:
    app = make_app(client_factory=fake.client_factory)
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    sign_in(qtbot, app, "boss", "pw")
    console = app.window.audit_console
    assert app.window.tabs.isTabVisible(app.window.audit_index)
    assert not console.search.isEnabled() and not console.export_jsonl.isEnabled()
    assert "need the auditor role" in console.status.text()
    with qtbot.waitSignal(app.audit.verified, timeout=20_000):
        qtbot.mouseClick(console.verify, Qt.MouseButton.LeftButton)
    assert console.verify_result.text().startswith("✔")


def test_admin_pages(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path) -> None:
    app = make_app(client_factory=fake.client_factory)
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    admin = app.window.admin_pages
    with qtbot.waitSignal(app.admin.teams, timeout=20_000):
        sign_in(qtbot, app, "boss", "pw")
    qtbot.waitUntil(lambda: admin.user_table.rowCount() == 3 and admin.token_table.rowCount() == 1, timeout=20_000)
    admin.new_name.setText("newbie")
    qtbot.mouseClick(admin.add_user, Qt.MouseButton.LeftButton)
    # Users and teams are read again: the new user is in the list and in the team's members.
    qtbot.waitUntil(lambda: admin.user_table.rowCount() == 4 and "newbie" in admin.team_table.item(0, 1).text(),
                    timeout=20_000)
    # The one-time password is shown once, in its own box, to the admin who added the user.
    assert not admin.otp_box.isHidden() and admin.otp.text() == fake.passwords["newbie"][0]
    assert "shown only now" in admin.otp_text.text()
    qtbot.mouseClick(admin.dismiss_otp, Qt.MouseButton.LeftButton)
    assert admin.otp_box.isHidden() and admin.otp.text() == ""
    admin.user_table.selectRow(3)
    with qtbot.waitSignal(app.admin.users, timeout=20_000):
        qtbot.mouseClick(admin.toggle_user, Qt.MouseButton.LeftButton)
    assert fake.users[3]["disabled"] is True
    admin.user_table.selectRow(3)
    admin.role.setCurrentText("auditor")
    with qtbot.waitSignal(app.admin.users, timeout=20_000):
        qtbot.mouseClick(admin.set_role, Qt.MouseButton.LeftButton)
    assert fake.users[3]["role"] == "auditor"
    admin.token_table.selectRow(0)
    with qtbot.waitSignal(app.admin.tokens, timeout=20_000):
        qtbot.mouseClick(admin.revoke, Qt.MouseButton.LeftButton)
    assert fake.token_rows[0]["status"] == "revoked"
    admin.team_table.selectRow(0)
    assert json.loads(admin.policy.toPlainText()) == {"capture_mode": "sealed"}
    admin.policy.setPlainText('{"requests_per_minute": 30}')
    with qtbot.waitSignal(app.admin.teams, timeout=20_000):
        qtbot.mouseClick(admin.save_policy, Qt.MouseButton.LeftButton)
    assert fake.teams[0]["policy"]["requests_per_minute"] == 30
    admin.policy.setPlainText("{oops")
    qtbot.mouseClick(admin.save_policy, Qt.MouseButton.LeftButton)
    assert "not valid JSON" in admin.status.text()


def test_index_is_kept_current_by_polling(qtbot: QtBot, make_app: Callable[..., App], fixture_project: Path) -> None:
    app = make_app(poll_ms=100)
    progress: list[tuple[int, int]] = []
    app.project.indexProgress.connect(lambda done, total: progress.append((done, total)))
    open_project(qtbot, app, fixture_project)
    assert progress and progress[-1][0] == progress[-1][1]  # the progress bar ran to the end
    (fixture_project / "src" / "shop" / "tax.py").write_text("def vat(x):\n    return x\n")
    qtbot.waitUntil(lambda: "src/shop/tax.py" in app.project.paths, timeout=20_000)
    (fixture_project / "web" / "app.js").unlink()
    qtbot.waitUntil(lambda: "web/app.js" not in app.project.paths, timeout=20_000)
    assert app.project.index is not None and app.project.index.definitions(["vat"])


def test_a_context_too_long_for_the_model_is_trimmed_and_sent_again(
    qtbot: QtBot, signed_in: App, fake: FakeAppliance, fixture_project: Path
) -> None:
    app = signed_in
    ws = app.window.workspace
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/cart.py")
    select_lines(app, 13, 14)
    ws.panel.question.setPlainText("unit_price Cart renderCart total")
    with qtbot.waitSignal(app.project.contextReady, timeout=20_000):
        qtbot.mouseClick(ws.panel.prepare, Qt.MouseButton.LeftButton)
    assert ws.context is not None
    full = list(ws.context.items)
    # The model takes 150 tokens less than this prompt needs (the fake counts two characters a token).
    request = build_chat_request("m", "unit_price Cart renderCart total", ws.context, app.project.project_id)
    fake.context_limit = 512 + sum(len(m.text()) for m in request.messages) // 2 - 150
    with qtbot.waitSignal(app.generation.finished, timeout=20_000):
        qtbot.mouseClick(ws.panel.send, Qt.MouseButton.LeftButton)
    first, second = fake.requests[-2:]
    assert len(second["messages"][1]["content"]) < len(first["messages"][1]["content"])
    kept = ws.context.items
    assert kept and kept[0] == full[0]  # the selection, first in priority, stays
    assert len(kept) < len(full) and ws.budget < 3000
    assert ws.panel.answer_text == fake.answer
    # Issue #15 failure 5: what the budget dropped is named, with why, and the list shown is what was sent.
    dropped = [item.label for item in full if item not in kept]
    assert not ws.panel.dropped.isHidden() and all(label in ws.panel.dropped.text() for label in dropped)
    assert f"the model takes {fake.context_limit} tokens" in ws.panel.dropped.text()
    assert ws.panel.context_list.count() == len(kept)
    assert {f["path"] for f in second["enclave"]["context_files"]} == {i.path for i in kept}


def test_the_context_sent_is_the_list_shown(qtbot: QtBot, signed_in: App, fake: FakeAppliance, fixture_project: Path) -> None:
    """Issue #15 failure 5: editing the question after gathering does not swap the shown list for another."""
    app = signed_in
    ws = app.window.workspace
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/cart.py")
    ws.panel.question.setPlainText("unit_price Cart renderCart total")
    with qtbot.waitSignal(app.project.contextReady, timeout=20_000):
        qtbot.mouseClick(ws.panel.prepare, Qt.MouseButton.LeftButton)
    assert ws.context is not None and len(ws.context.items) > 1
    ws.panel.context_list.item(0).setSelected(True)
    qtbot.mouseClick(ws.panel.remove, Qt.MouseButton.LeftButton)
    shown = list(ws.context.items)
    ws.panel.question.setPlainText("unit_price Cart renderCart total, and why?")
    with qtbot.waitSignal(app.generation.finished, timeout=20_000):
        qtbot.mouseClick(ws.panel.send, Qt.MouseButton.LeftButton)
    content = fake.requests[-1]["messages"][1]["content"]
    assert ws.context.items == shown and ws.panel.context_list.count() == len(shown)
    for item in shown:
        assert item.text in content


def test_a_context_that_cannot_fit_is_reported(qtbot: QtBot, signed_in: App, fake: FakeAppliance, fixture_project: Path) -> None:
    app = signed_in
    ws = app.window.workspace
    open_project(qtbot, app, fixture_project)
    fake.context_limit = 100  # less than max_tokens alone
    ws.panel.question.setPlainText("unit_price")
    with qtbot.waitSignal(app.generation.failed, timeout=20_000):
        qtbot.mouseClick(ws.panel.send, Qt.MouseButton.LeftButton)
    assert "maximum context length is 100 tokens" in ws.panel.status.text()
    assert ws.panel.question.toPlainText() == "unit_price"


def test_sign_in_with_an_api_token(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    fake.tokens["encl_pasted"] = "dev"
    app = make_app(client_factory=fake.client_factory)
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    dialog = app.window.show_sign_in()
    dialog.tabs.setCurrentIndex(1)
    dialog.token.setText("encl_nonsense")
    with qtbot.waitSignal(app.connection.failed, timeout=20_000):
        qtbot.mouseClick(dialog.sign_in, Qt.MouseButton.LeftButton)
    assert "token expired or revoked" in dialog.error.text() and memory_keyring.secrets == {}
    dialog.token.setText("encl_pasted")
    with qtbot.waitSignal(app.connection.signedIn, timeout=20_000):
        qtbot.mouseClick(dialog.sign_in, Qt.MouseButton.LeftButton)
    assert list(memory_keyring.secrets.values()) == ["encl_pasted"]


def test_audit_time_range_filter(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path) -> None:
    from desktop.qt import QDateTime, QTimeZone

    app = make_app(client_factory=fake.client_factory)
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    console = app.window.audit_console
    with qtbot.waitSignal(app.audit.page, timeout=20_000):
        sign_in(qtbot, app, "aud", "pw")
    utc = QTimeZone.utc()
    console.use_since.setChecked(True)
    console.since.setDateTime(QDateTime.fromString("2026-11-21T00:00:00Z", "yyyy-MM-ddTHH:mm:ssZ").toTimeZone(utc))
    console.use_until.setChecked(True)
    console.until.setDateTime(QDateTime.fromString("2026-11-21T12:00:00Z", "yyyy-MM-ddTHH:mm:ssZ").toTimeZone(utc))
    with qtbot.waitSignal(app.audit.page, timeout=20_000):
        qtbot.mouseClick(console.search, Qt.MouseButton.LeftButton)
    times = [r["time"] for r in console.records]
    assert len(times) == 12 and min(times) == "2026-11-21T00:00:00Z" and max(times) == "2026-11-21T11:00:00Z"


def test_a_handed_over_token_is_offered_not_stored(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, memory_keyring: MemoryKeyring, tmp_path: Path
) -> None:
    fake.tokens["encl_from_demo"] = "dev"
    app = make_app(client_factory=fake.client_factory)
    app.window.suggested_token = "encl_from_demo"
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    dialog = app.window.show_sign_in()
    assert dialog.tabs.currentIndex() == 1 and dialog.token.text() == "encl_from_demo"
    assert memory_keyring.secrets == {}
    with qtbot.waitSignal(app.connection.signedIn, timeout=20_000):
        qtbot.mouseClick(dialog.sign_in, Qt.MouseButton.LeftButton)
    assert list(memory_keyring.secrets.values()) == ["encl_from_demo"]


def test_asking_without_a_project_says_so_and_keeps_the_question(qtbot: QtBot, signed_in: App) -> None:
    ws = signed_in.window.workspace
    ws.panel.question.setPlainText("what does this do?")
    with qtbot.waitSignal(signed_in.project.failed, timeout=20_000):
        qtbot.mouseClick(ws.panel.send, Qt.MouseButton.LeftButton)
    assert "open a project first" in ws.panel.status.text()
    assert ws.panel.question.toPlainText() == "what does this do?"


def test_server_path_exclusions_keep_a_file_out_of_the_index_and_every_request(
    qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path, fixture_project: Path
) -> None:
    excluded = "src/shop/discounts.py"
    (fixture_project / excluded).write_text(
        "from shop.prices import unit_price\n\n\ndef staff_price(sku: str) -> float:\n"
        "    return unit_price(sku) * 0.7  # STAFFRATE\n"
    )
    fake.path_exclusions = ["src/shop/discounts.py"]
    app = make_app(client_factory=fake.client_factory)
    confirm_and_connect(qtbot, app, connect(qtbot, app, URL, str(make_ca().write(tmp_path / "ca.pem"))))
    # Opened before sign-in, the project is indexed with the local rules only ...
    open_project(qtbot, app, fixture_project)
    assert app.project.index is not None and excluded in app.project.index.paths()
    # ... and signing in brings the appliance's exclusions, which drop the file from the index.
    sign_in(qtbot, app, "dev", "pw")
    assert app.connection.session is not None and excluded in app.connection.session.path_exclusions
    qtbot.waitUntil(lambda: excluded not in app.project.paths, timeout=20_000)
    assert excluded not in app.project.index.paths()
    assert all(hit.path != excluded for hit in app.project.index.search("staff_price STAFFRATE"))
    # Even open in the editor (read from disk, not the index), it is not sent as context.
    open_file(qtbot, app, excluded)
    ask(qtbot, app, "how does Cart total use unit_price and staff_price")
    sent = fake.requests[-1]
    assert excluded not in [f["path"] for f in sent["enclave"]["context_files"]]
    assert "STAFFRATE" not in json.dumps(sent)


def test_exclusions_apply_to_a_project_opened_after_sign_in(
    qtbot: QtBot, signed_in: App, fake: FakeAppliance, fixture_project: Path
) -> None:
    (fixture_project / "web" / "admin.js").write_text("export const ADMINKEY = 1;\n")
    assert signed_in.connection.session is not None
    fake.path_exclusions = ["web/admin.js"]
    signed_in.project.set_server_patterns(fake.path_exclusions)
    open_project(qtbot, signed_in, fixture_project)
    assert signed_in.project.index is not None
    assert "web/app.js" in signed_in.project.index.paths() and "web/admin.js" not in signed_in.project.index.paths()
