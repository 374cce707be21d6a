"""The desktop client against a real appliance (``enclave demo``: HTTPS on loopback, the demo model
on ONNX Runtime, SQLite, the real audit log), driven through the UI with pytest-qt, offscreen.

The demo model's weights are random, so its answers are noise; the flows do not depend on what it
says, only on the path: TLS with the pinned CA, sign-in, streaming, the audit records it leaves.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from desktop.app import App
from desktop.client.api import ApplianceClient
from desktop.qt import QDateTime, Qt
from desktop.ui.dialogs import SignInDialog
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
from tests.helpers.desktop_real_appliance import ADMIN, AUDITOR, RealAppliance, real_appliance
from tests.helpers.desktop_tls import make_ca


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealAppliance]:
    with real_appliance(tmp_path_factory.mktemp("appliance") / "data") as running:
        yield running


@pytest.fixture
def real_app(make_app: Callable[..., App]) -> Callable[..., App]:
    # Short answers: the demo model runs on the CPU here.
    return lambda **kw: make_app(answer_max_tokens=24, **kw)


def _connect(qtbot: QtBot, app: App, appliance: RealAppliance) -> None:
    dialog = connect(qtbot, app, appliance.url, str(appliance.ca_file))
    # What the client shows is what the appliance printed at start: the user can compare them.
    assert dialog.fingerprint.text() == appliance.fingerprint
    confirm_and_connect(qtbot, app, dialog)


def test_connect_sign_in_ask_apply_undo_conflict(
    qtbot: QtBot, real_app: Callable[..., App], appliance: RealAppliance, memory_keyring: MemoryKeyring,
    fixture_project: Path, tmp_path: Path,
) -> None:
    app = real_app()
    _connect(qtbot, app, appliance)
    sign_in(qtbot, app, appliance.username, appliance.password)
    [((_, url), token)] = memory_keyring.secrets.items()
    assert url == appliance.url and token.startswith("encl_")
    assert not any(token in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())

    ws = app.window.workspace
    open_project(qtbot, app, fixture_project)
    open_file(qtbot, app, "src/shop/cart.py")
    select_lines(app, 14, 14)
    deltas: list[str] = []
    app.generation.delta.connect(deltas.append)
    ask(qtbot, app, "why does total ignore unknown items")
    assert len(deltas) >= 2 and ws.panel.answer_text == "".join(deltas)
    labels = [ws.panel.context_list.item(i).text() for i in range(ws.panel.context_list.count())]
    assert labels[0].startswith("src/shop/cart.py:14-14 (selection)")
    assert "Done" in ws.panel.status.text()

    cart = fixture_project / "src/shop/cart.py"
    original = cart.read_text()
    with qtbot.waitSignal(app.edits.proposed, timeout=60_000):
        qtbot.mouseClick(ws.panel.propose, Qt.MouseButton.LeftButton)
    view = ws.proposal_view
    assert view.diff.toPlainText().startswith("--- a/src/shop/cart.py")
    with qtbot.waitSignal(app.edits.applied, timeout=60_000):
        qtbot.mouseClick(view.apply, Qt.MouseButton.LeftButton)
    assert cart.read_text() != original
    with qtbot.waitSignal(app.edits.undone, timeout=60_000):
        qtbot.mouseClick(view.undo, Qt.MouseButton.LeftButton)
    assert cart.read_text() == original
    with qtbot.waitSignal(app.edits.proposed, timeout=60_000):
        qtbot.mouseClick(ws.panel.propose, Qt.MouseButton.LeftButton)
    cart.write_text(original + "# changed by someone else\n")
    with qtbot.waitSignal(app.edits.conflict, timeout=60_000):
        qtbot.mouseClick(view.apply, Qt.MouseButton.LeftButton)
    assert cart.read_text() == original + "# changed by someone else\n"
    assert view.title.text().startswith("Conflict")

    # The appliance audited the generation with the project and the context files' digests.
    auditor = ApplianceClient(appliance.url, ca_file=appliance.ca_file)
    auditor.token = auditor.login(*AUDITOR).token
    from desktop.client.api import AuditQuery

    [requested] = auditor.audit_events(AuditQuery(action="generation.requested", actor=appliance.username), limit=1)["records"]
    assert requested["details"]["project_id"] == app.project.project_id
    assert ws.context is not None
    sent = {(f["path"], f["sha256"]) for f in requested["details"]["context_files"]}
    assert sent == set(ws.context.files())
    # The client learnt its role from /v1/auth/me: signing in probed no route it may not use.
    assert app.connection.session is not None and app.connection.session.role == "developer"
    denied = auditor.audit_events(AuditQuery(action="authz.denied", actor=appliance.username), limit=10)["records"]
    assert denied == []


def test_wrong_fingerprint_unreachable_and_expired_session(
    qtbot: QtBot, real_app: Callable[..., App], appliance: RealAppliance, fixture_project: Path, tmp_path: Path,
) -> None:
    app = real_app()
    # A CA that did not issue the appliance's certificate: the user confirmed the wrong fingerprint.
    impostor = str(make_ca("Not the appliance").write(tmp_path / "other-ca.pem"))
    dialog = connect(qtbot, app, appliance.url, impostor)
    assert dialog.fingerprint.text() != appliance.fingerprint
    dialog.confirm.setChecked(True)
    with qtbot.waitSignal(app.connection.failed, timeout=30_000):
        qtbot.mouseClick(dialog.connect_button, Qt.MouseButton.LeftButton)
    assert "not issued by the pinned CA" in dialog.error.text() and "Do not sign in" in dialog.error.text()
    assert (dialog.url.text(), dialog.ca_path.text()) == (appliance.url, impostor)
    assert app.connection.profile is None

    # Unreachable: nothing listens on that port.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"https://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    dialog.url.setText(dead)
    dialog.ca_path.setText(str(appliance.ca_file))
    with qtbot.waitSignal(app.connection.caInspected, timeout=10_000):
        qtbot.mouseClick(dialog.inspect, Qt.MouseButton.LeftButton)
    dialog.confirm.setChecked(True)
    with qtbot.waitSignal(app.connection.failed, timeout=30_000):
        qtbot.mouseClick(dialog.connect_button, Qt.MouseButton.LeftButton)
    assert "cannot reach the appliance" in dialog.error.text()
    assert dialog.url.text() == dead

    # The right one, then the session ends on the server while the user works.
    dialog.url.setText(appliance.url)
    dialog.confirm.setChecked(True)
    with qtbot.waitSignal(app.connection.connected, timeout=30_000):
        qtbot.mouseClick(dialog.connect_button, Qt.MouseButton.LeftButton)
    sign_in(qtbot, app, appliance.username, appliance.password)
    open_project(qtbot, app, fixture_project)
    ApplianceClient(appliance.url, ca_file=appliance.ca_file, token=app.connection.client.token).logout()
    ws = app.window.workspace
    ws.panel.question.setPlainText("a question I typed carefully")
    with qtbot.waitSignal(app.generation.failed, timeout=30_000):
        qtbot.mouseClick(ws.panel.send, Qt.MouseButton.LeftButton)
    assert "session has ended" in app.window.banner_text.text()
    assert ws.panel.question.toPlainText() == "a question I typed carefully"
    qtbot.mouseClick(app.window.banner_action, Qt.MouseButton.LeftButton)
    signin = app.window.dialog
    assert isinstance(signin, SignInDialog) and signin.username.text() == appliance.username
    signin.password.setText(appliance.password)
    with qtbot.waitSignal(app.connection.signedIn, timeout=30_000):
        qtbot.mouseClick(signin.sign_in, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(app.generation.finished, timeout=120_000):
        qtbot.mouseClick(ws.panel.send, Qt.MouseButton.LeftButton)


def test_audit_console_lists_filters_verifies_exports(
    qtbot: QtBot, real_app: Callable[..., App], appliance: RealAppliance, tmp_path: Path,
) -> None:
    app = real_app()
    _connect(qtbot, app, appliance)
    console = app.window.audit_console
    console.page_size = 3
    with qtbot.waitSignal(app.audit.page, timeout=30_000):
        sign_in(qtbot, app, *AUDITOR)
    assert app.window.tabs.isTabVisible(app.window.audit_index)
    assert console.table.rowCount() == 3
    first_page = [console.records[i]["seq"] for i in range(3)]
    assert first_page == sorted(first_page, reverse=True)
    with qtbot.waitSignal(app.audit.page, timeout=30_000):
        qtbot.mouseClick(console.next_page, Qt.MouseButton.LeftButton)
    assert console.records[0]["seq"] < first_page[-1]

    console.page_size = 50
    console.action.setText("auth.")
    with qtbot.waitSignal(app.audit.page, timeout=30_000):
        qtbot.mouseClick(console.search, Qt.MouseButton.LeftButton)
    assert console.records and all(r["action"].startswith("auth.") for r in console.records)
    console.action.clear()
    console.actor.setText(AUDITOR[0])
    console.outcome.setCurrentText("success")
    with qtbot.waitSignal(app.audit.page, timeout=30_000):
        qtbot.mouseClick(console.search, Qt.MouseButton.LeftButton)
    assert console.records  # at least this sign-in
    assert all(r["actor"] == AUDITOR[0] and r["outcome"] == "success" for r in console.records)
    console.table.selectRow(0)
    assert f"actor: {AUDITOR[0]}" in console.detail.toPlainText()

    # Time range: the last hour has these events; from an hour ahead on there are none.
    console.actor.clear()
    console.outcome.setCurrentText("")
    now = QDateTime.currentDateTimeUtc()
    console.use_since.setChecked(True)
    console.since.setDateTime(now.addSecs(-3600))
    console.use_until.setChecked(True)
    console.until.setDateTime(now.addSecs(3600))
    with qtbot.waitSignal(app.audit.page, timeout=30_000):
        qtbot.mouseClick(console.search, Qt.MouseButton.LeftButton)
    assert console.records
    console.since.setDateTime(now.addSecs(3600))
    console.until.setDateTime(now.addSecs(7200))
    with qtbot.waitSignal(app.audit.page, timeout=30_000):
        qtbot.mouseClick(console.search, Qt.MouseButton.LeftButton)
    assert console.records == [] and "No events match" in console.status.text()
    console.use_since.setChecked(False)
    console.use_until.setChecked(False)

    with qtbot.waitSignal(app.audit.verified, timeout=60_000):
        qtbot.mouseClick(console.verify, Qt.MouseButton.LeftButton)
    assert console.verify_result.text().startswith("✔ chain intact")
    for fmt in ("jsonl", "cef"):
        out = tmp_path / f"audit.{fmt}"
        with qtbot.waitSignal(app.audit.exported, timeout=60_000):
            console.export_to(str(out), fmt)
        lines = out.read_text().splitlines()
        assert len(lines) > 5
        if fmt == "jsonl":
            assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
        else:
            assert all(line.startswith("CEF:0|Enclave|") for line in lines)


def test_sign_in_with_the_demo_api_token(
    qtbot: QtBot, real_app: Callable[..., App], appliance: RealAppliance, memory_keyring: MemoryKeyring
) -> None:
    app = real_app()
    _connect(qtbot, app, appliance)
    dialog = app.window.show_sign_in()
    dialog.tabs.setCurrentIndex(1)
    dialog.token.setText(appliance.token)
    with qtbot.waitSignal(app.connection.signedIn, timeout=30_000):
        qtbot.mouseClick(dialog.sign_in, Qt.MouseButton.LeftButton)
    assert app.connection.session is not None and app.connection.session.models
    assert list(memory_keyring.secrets.values()) == [appliance.token]


def test_admin_pages_against_the_appliance(qtbot: QtBot, real_app: Callable[..., App], appliance: RealAppliance) -> None:
    app = real_app()
    _connect(qtbot, app, appliance)
    admin = app.window.admin_pages
    with qtbot.waitSignal(app.admin.teams, timeout=30_000):
        sign_in(qtbot, app, *ADMIN)
    qtbot.waitUntil(lambda: admin.user_table.rowCount() >= 3, timeout=30_000)
    # An admin may verify the chain but not read the events (that is the auditor's).
    console = app.window.audit_console
    assert app.window.tabs.isTabVisible(app.window.audit_index) and not console.search.isEnabled()
    with qtbot.waitSignal(app.audit.verified, timeout=60_000):
        qtbot.mouseClick(console.verify, Qt.MouseButton.LeftButton)
    assert console.verify_result.text().startswith("✔ chain intact")
    admin.new_name.setText("newdev")
    with qtbot.waitSignal(app.admin.users, timeout=30_000):
        qtbot.mouseClick(admin.add_user, Qt.MouseButton.LeftButton)
    # The appliance's generated one-time password, shown once in its own box.
    assert not admin.otp_box.isHidden() and len(admin.otp.text()) >= 12 and "shown only now" in admin.otp_text.text()
    row = next(i for i, u in enumerate(admin.users) if u["username"] == "newdev")
    admin.user_table.selectRow(row)
    admin.role.setCurrentText("auditor")
    qtbot.mouseClick(admin.set_role, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: next(u for u in admin.users if u["username"] == "newdev")["role"] == "auditor", timeout=30_000)
    admin.user_table.selectRow(row)
    qtbot.mouseClick(admin.toggle_user, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: next(u for u in admin.users if u["username"] == "newdev")["disabled"] is True, timeout=30_000)
    # The demo's token is listed; revoke it and see it so.
    qtbot.waitUntil(lambda: any(t["name"] == "demo" for t in admin.token_rows), timeout=30_000)
    admin.token_table.selectRow(next(i for i, t in enumerate(admin.token_rows) if t["name"] == "demo"))
    # Each change re-reads every list, so an earlier change's token list may arrive first: wait for
    # the list that shows the revocation.
    qtbot.mouseClick(admin.revoke, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: next(t for t in admin.token_rows if t["name"] == "demo")["status"] == "revoked", timeout=30_000
    )
    admin.team_table.selectRow(0)
    admin.policy.setPlainText('{"requests_per_minute": 600}')
    qtbot.mouseClick(admin.save_policy, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: admin.team_rows[0]["policy"].get("requests_per_minute") == 600, timeout=30_000)
