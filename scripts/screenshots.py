"""Screenshots of the desktop client for the README: the workspace and the audit console.

Starts a real appliance (``enclave demo`` on loopback, in a temporary directory), drives the client
under the X server in DISPLAY (e.g. ``xvfb-run -a``; offscreen when there is none) (connect, sign in, open this repository's ``desktop/`` folder as the project, ask a
question, then the audit console as an auditor) and saves ``QWidget.grab()`` images:

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

The token goes to an in-memory keyring, never the user's. The answer comes from the trained demo
model (6.5 M parameters, docs/demo-model.md); everything around it is real.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

# Under a real X server when there is one (DISPLAY set: a desktop, or `xvfb-run`), else offscreen.
if not os.environ.get("DISPLAY"):
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from desktop.app import Dirs, build  # noqa: E402
from desktop.qt import QApplication, QEventLoop, QTextCursor, QTimer  # noqa: E402
from tests.helpers.desktop_keyring import MemoryKeyring  # noqa: E402
from tests.helpers.desktop_real_appliance import AUDITOR, real_appliance  # noqa: E402


def wait(signal: Any, timeout_s: float = 120) -> None:
    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    signal.disconnect(loop.quit)


def settle(ms: int = 300) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    qt = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp, real_appliance(Path(tmp) / "appliance") as appliance:
        home = Path(tmp)
        app = build(Dirs(home / "config", home / "cache", home / "data"), keyring_backend=MemoryKeyring(),
                    answer_max_tokens=48)
        window = app.window
        window.resize(1280, 760)
        window.show()
        dialog = window.show_connect(url=appliance.url, ca_path=str(appliance.ca_file))
        dialog.inspect.click()
        wait(app.connection.caInspected)
        dialog.confirm.setChecked(True)
        dialog.connect_button.click()
        wait(app.connection.connected)
        signin = window.show_sign_in()
        signin.username.setText(appliance.username)
        signin.password.setText(appliance.password)
        signin.sign_in.click()
        wait(app.connection.signedIn)

        app.project.open(str(ROOT / "desktop"))
        wait(app.project.indexed)
        ws = window.workspace
        app.project.load("project/context.py")
        wait(app.project.fileLoaded)
        doc = ws.editor.document()
        cursor = QTextCursor(doc.findBlockByNumber(209))
        end = doc.findBlockByNumber(214)
        cursor.setPosition(end.position() + end.length() - 1, QTextCursor.MoveMode.KeepAnchor)
        ws.editor.setTextCursor(cursor)
        ws.editor.centerCursor()
        ws.editor.horizontalScrollBar().setValue(0)
        ws.panel.question.setPlainText("Why does assemble() resolve absolute paths first?")
        ws.panel.send.click()
        wait(app.generation.finished)
        ws.tree.expandAll()
        settle()
        window.grab().save(str(args.out / "workspace.png"))

        window.connection.sign_out()
        wait(app.connection.signedOut)
        signin = window.show_sign_in()
        signin.username.setText(AUDITOR[0])
        signin.password.setText(AUDITOR[1])
        signin.sign_in.click()
        wait(app.audit.page)
        window.tabs.setCurrentIndex(window.audit_index)
        console = window.audit_console
        console.table.selectRow(0)
        console.verify.click()
        wait(app.audit.verified)
        console.usage_days.setValue(7)
        console.refresh_usage()
        wait(app.audit.usage)
        settle()
        window.grab().save(str(args.out / "audit-console.png"))
        app.close()
    del qt
    for name in ("workspace.png", "audit-console.png"):
        path = args.out / name
        print(f"{path}: {path.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
