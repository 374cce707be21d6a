"""Issue #15 failure 3: ``enclave-desktop --url --ca`` (and so ``scripts/demo``) opens that appliance — the
saved profile when it is the same appliance and CA, else a connect dialog filled in with it — never the saved
profile of another (dead) appliance; a dead saved profile is offered for removal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pytestqt.qtbot import QtBot

from desktop.app import App, start
from tests.helpers.desktop_fake_appliance import FakeAppliance
from tests.helpers.desktop_flows import WAIT_MS, confirm_and_connect, connect, sign_in
from tests.helpers.desktop_tls import make_ca

OLD = "https://old-demo.test:8443"
NEW = "https://new-demo.test:9443"


def _saved(qtbot: QtBot, make_app: Callable[..., App], fake: FakeAppliance, tmp_path: Path) -> Path:
    first = make_app(client_factory=fake.client_factory)
    ca = make_ca().write(tmp_path / "old-ca.pem")
    confirm_and_connect(qtbot, first, connect(qtbot, first, OLD, str(ca)))
    sign_in(qtbot, first, "dev", "pw")
    first.close()
    return ca


def test_url_and_ca_of_another_appliance_open_the_connect_dialog_for_it(
    qtbot: QtBot, make_app: Callable[..., App], tmp_path: Path
) -> None:
    fake = FakeAppliance()
    _saved(qtbot, make_app, fake, tmp_path)
    new_ca = make_ca().write(tmp_path / "new-ca.pem")
    app = make_app(client_factory=fake.client_factory)
    with qtbot.waitSignal(app.connection.caInspected, timeout=WAIT_MS):
        start(app, url=NEW, ca_path=str(new_ca))
    dialog = app.window.dialog
    assert dialog is not None and dialog.url.text() == NEW and dialog.ca_path.text() == str(new_ca)
    assert app.connection.profile is None  # the old appliance was not opened
    confirm_and_connect(qtbot, app, dialog)  # type: ignore[arg-type]
    assert app.connection.profile is not None and app.connection.profile.url == NEW


def test_same_url_restores_and_a_new_ca_for_it_asks_again(
    qtbot: QtBot, make_app: Callable[..., App], tmp_path: Path
) -> None:
    fake = FakeAppliance()
    old_ca = _saved(qtbot, make_app, fake, tmp_path)
    app = make_app(client_factory=fake.client_factory)
    with qtbot.waitSignal(app.connection.signedIn, timeout=WAIT_MS):
        start(app, url=OLD + "/", ca_path=str(old_ca))
    assert app.window.dialog is None
    other = make_app(client_factory=fake.client_factory)
    with qtbot.waitSignal(other.connection.caInspected, timeout=WAIT_MS):
        start(other, url=OLD, ca_path=str(make_ca().write(tmp_path / "rotated.pem")))
    assert other.window.dialog is not None


def test_dead_saved_profile_is_offered_for_removal(qtbot: QtBot, make_app: Callable[..., App], tmp_path: Path) -> None:
    fake = FakeAppliance()
    _saved(qtbot, make_app, fake, tmp_path)
    fake.reachable = False
    app = make_app(client_factory=fake.client_factory)
    with qtbot.waitSignal(app.connection.failed, timeout=WAIT_MS):
        start(app)
    window = app.window
    assert not window.banner.isHidden() and OLD in window.banner_text.text()
    assert window.banner_second.text() == "Forget this appliance…"
    window.banner_second.click()
    assert app.connection.profile is None and not app.connection.has_saved()
    assert window.dialog is not None and window.dialog.url.text() == ""


def test_appliance_down_is_shown_and_typed_work_kept(qtbot: QtBot, make_app: Callable[..., App], tmp_path: Path) -> None:
    fake = FakeAppliance()
    app = make_app(client_factory=fake.client_factory, health_ms=50)
    confirm_and_connect(qtbot, app, connect(qtbot, app, NEW, str(make_ca().write(tmp_path / "ca.pem"))))
    sign_in(qtbot, app, "dev", "pw")
    panel = app.window.workspace.panel
    panel.question.setPlainText("why is total wrong?")
    fake.reachable = False  # as when scripts/demo's appliance is killed
    with qtbot.waitSignal(app.connection.reachable, timeout=WAIT_MS) as down:
        pass
    assert down.args == [False]
    assert "does not answer" in app.window.banner_text.text() and app.window.isVisible()
    assert panel.question.toPlainText() == "why is total wrong?"
    fake.reachable = True
    with qtbot.waitSignal(app.connection.reachable, timeout=WAIT_MS) as back:
        pass
    assert back.args == [True] and app.window.banner.isHidden()
