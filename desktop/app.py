"""``enclave-desktop``: builds the services and the main window, and runs the Qt event loop.

``--self-test`` opens the main window offscreen, lets the event loop run once and exits 0: the
installer's smoke test for a frozen build (Qt plugins, fonts and our modules all load).
"""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from keyring.backend import KeyringBackend

from desktop.client.api import ApplianceClient
from desktop.client.credentials import CredentialStore
from desktop.client.profile import ProfileStore, normalize_url
from desktop.dirs import APP_NAME, Dirs
from desktop.project.history import HistoryStore
from desktop.qt import QApplication, QThreadPool, QTimer
from desktop.services.audit import AdminService, AuditService
from desktop.services.connection import ClientFactory, ConnectionService
from desktop.services.edits import EditService
from desktop.services.generation import CompletionService, GenerationService, HistoryService
from desktop.services.project import ProjectService
from desktop.ui.main_window import MainWindow
from desktop.ui.workspace import Workspace
from shared.errors import InputError
from shared.version import VERSION

__all__ = ["APP_NAME", "App", "Dirs", "build", "main", "start"]


@dataclass
class App:
    """Everything the running client is made of (tests build one with their own parts)."""

    pool: QThreadPool
    connection: ConnectionService
    project: ProjectService
    generation: GenerationService
    completion: CompletionService
    edits: EditService
    history: HistoryStore
    history_service: HistoryService
    audit: AuditService
    admin: AdminService
    window: MainWindow

    def close(self) -> None:
        # The window asked about unsaved edits when the user closed it; this is the shutdown after.
        self.window.workspace.buffers.clear()
        self.window.workspace.editor.document().setModified(False)
        self.window.close()
        self.project.close()
        self.pool.waitForDone(10_000)
        self.history.close()


def build(
    dirs: Dirs,
    *,
    keyring_backend: KeyringBackend | None = None,
    client_factory: ClientFactory | None = None,
    policy_patterns: Sequence[str] = (),
    poll_ms: int = 2000,
    completion_pause_ms: int = 600,
    answer_max_tokens: int = 512,
    health_ms: int = 5000,
    open_browser: Callable[[str], object] | None = None,
) -> App:
    pool = QThreadPool()
    pool.setMaxThreadCount(4)
    connection = ConnectionService(
        profiles=ProfileStore(dirs.config),
        credentials=CredentialStore(keyring_backend),
        pool=pool,
        client_factory=client_factory or ApplianceClient,
        open_browser=open_browser or webbrowser.open,
    )
    history = HistoryStore(dirs.data / "history.sqlite")
    project = ProjectService(cache_dir=dirs.cache, pool=pool, policy_patterns=policy_patterns, poll_ms=poll_ms)
    # The appliance's exclusions apply from sign-in on; they stay after sign-out (never index more).
    connection.signedIn.connect(lambda session: project.set_server_patterns(session.path_exclusions))
    generation = GenerationService(
        client=lambda: connection.client, pool=pool, history=history, max_tokens=answer_max_tokens
    )
    completion = CompletionService(client=lambda: connection.client, pool=pool)
    edits = EditService()
    history_service = HistoryService(history=history, pool=pool)
    audit = AuditService(client=lambda: connection.client, pool=pool)
    admin = AdminService(client=lambda: connection.client, pool=pool)
    workspace = Workspace(
        project=project, generation=generation, completion=completion, edits=edits, history=history_service,
        completion_pause_ms=completion_pause_ms,
    )
    window = MainWindow(connection=connection, workspace=workspace, audit=audit, admin=admin, health_ms=health_ms)
    return App(pool, connection, project, generation, completion, edits, history, history_service, audit, admin, window)


def start(app: App, *, url: str = "", ca_path: str = "") -> None:
    """Open the profile the user asked for: the saved one when it is for ``url`` (and the CA given, if
    any, is the one pinned), else the connect dialog filled in with ``url`` and ``ca_path`` — never the
    saved profile of another appliance (a dead demo's, say) when a URL was given."""
    wanted = ""
    if url:
        try:
            wanted = normalize_url(url)
        except InputError:
            wanted = ""  # the dialog shows the address as typed and says what is wrong with it
    if app.connection.matches_saved(wanted, ca_path) if url else app.connection.has_saved():
        app.connection.restore()
        return
    dialog = app.window.show_connect(url=url, ca_path=ca_path)
    if dialog.ca_path.text():
        dialog.inspect.click()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enclave-desktop", description="Enclave desktop client")
    parser.add_argument("--version", action="version", version=f"enclave-desktop {VERSION}")
    parser.add_argument("--self-test", action="store_true", help="open the main window offscreen and exit 0")
    parser.add_argument("--url", default="", help="the appliance to use (its saved profile, or a new one)")
    parser.add_argument("--ca", default="", help="the appliance's CA certificate (ca.pem), to pin for --url")
    parser.add_argument("project", nargs="?", help="a project folder to open")
    args = parser.parse_args(argv)
    if args.self_test:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    if args.self_test:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            app = build(Dirs(root / "config", root / "cache", root / "data"))
            app.window.show()
            seen: list[bool] = []

            def check() -> None:
                # Checked from inside the running loop: the window is up and has been painted.
                seen.append(app.window.isVisible() and not app.window.grab().isNull())
                qt_app.quit()

            QTimer.singleShot(0, check)
            qt_app.exec()
            ok = bool(seen and seen[0])
            app.close()
        print("enclave-desktop self-test: ok" if ok else "enclave-desktop self-test: window did not open")
        return 0 if ok else 1
    app = build(Dirs.for_user())
    app.window.show()
    # scripts/demo hands over the appliance it started; the user still confirms the fingerprint.
    app.window.suggested_token = os.environ.get("ENCLAVE_TOKEN", "")
    start(app, url=args.url or os.environ.get("ENCLAVE_URL", ""), ca_path=args.ca or os.environ.get("ENCLAVE_CA", ""))
    if args.project:
        app.project.open(args.project)
    code = qt_app.exec()
    app.close()
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())
