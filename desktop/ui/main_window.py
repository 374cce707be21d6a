"""The main window: connection state, the workspace, the audit console and admin pages.

It decides what to do with errors that need the user: an expired session opens the sign-in
dialog (the question and the editor keep their text); a certificate mismatch asks to re-pin;
an unreachable appliance offers to retry.
"""

from __future__ import annotations

from collections.abc import Callable

from desktop.client.errors import CertificateMismatchError, UnreachableError
from desktop.client.profile import Profile
from desktop.qt import (
    QAction,
    QCloseEvent,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QTabWidget,
    QTimer,
    QVBoxLayout,
    QWidget,
)
from desktop.services.audit import AdminService, AuditService
from desktop.services.connection import ConnectionService, Session
from desktop.ui.admin_pages import AdminPages
from desktop.ui.audit_console import AuditConsole
from desktop.ui.dialogs import ConnectDialog, SignInDialog, explain
from desktop.ui.password_dialog import ChangePasswordDialog
from desktop.ui.workspace import Workspace
from shared.errors import AuthError, PermissionDeniedError, ThrottledError

Dialog = ConnectDialog | SignInDialog | ChangePasswordDialog

__all__ = ["MainWindow"]


class MainWindow(QMainWindow):
    def __init__(
        self,
        *,
        connection: ConnectionService,
        workspace: Workspace,
        audit: AuditService,
        admin: AdminService,
        health_ms: int = 5000,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Enclave")
        self.resize(1280, 800)
        self.connection = connection
        self.workspace = workspace
        self.audit_console = AuditConsole(audit)
        self.admin_pages = AdminPages(admin)
        self.tabs = QTabWidget()
        self.tabs.addTab(workspace, "Workspace")
        self.audit_index = self.tabs.addTab(self.audit_console, "Audit")
        self.admin_index = self.tabs.addTab(self.admin_pages, "Admin")
        self.tabs.setTabVisible(self.audit_index, False)
        self.tabs.setTabVisible(self.admin_index, False)

        # The banner: one message and the one action that moves things forward.
        self.banner = QWidget()
        self.banner_text = QLabel("")
        self.banner_text.setWordWrap(True)
        self.banner_action = QPushButton("")
        # A second way out where there is one (a dead saved appliance: forget it).
        self.banner_second = QPushButton("")
        self.banner_second.hide()
        row = QHBoxLayout(self.banner)
        row.addWidget(self.banner_text, 1)
        row.addWidget(self.banner_action)
        row.addWidget(self.banner_second)
        self.banner.setStyleSheet("background: #fff4e5")
        self.banner.hide()
        self._banner_handler: Callable[[], object] | None = None
        self.banner_action.clicked.connect(self._banner_clicked)
        self._second_handler: Callable[[], object] | None = None
        self.banner_second.clicked.connect(self._second_clicked)

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.banner)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.connection_label = QLabel("Not connected")
        self.statusBar().addPermanentWidget(self.connection_label)

        menu = self.menuBar().addMenu("&Enclave")
        self.action_connect = QAction("Connect…", self)
        self.action_sign_in = QAction("Sign in…", self)
        self.action_sign_out = QAction("Sign out", self)
        self.action_password = QAction("Change password…", self)
        self.action_open = QAction("Open project…", self)
        for a in (self.action_connect, self.action_sign_in, self.action_password, self.action_sign_out, self.action_open):
            menu.addAction(a)
        self.action_connect.triggered.connect(lambda: self.show_connect())
        self.action_sign_in.triggered.connect(lambda: self.show_sign_in())
        self.action_sign_out.triggered.connect(connection.sign_out)
        self.action_open.triggered.connect(self._choose_project)
        self.action_password.triggered.connect(lambda: self.show_change_password(forced=False))
        self.action_sign_out.setEnabled(False)
        self.action_sign_in.setEnabled(False)
        self.action_password.setEnabled(False)
        # Whose data the views show: another user signing in (or anyone signing out) clears them.
        self._shown_user: str | None = None

        connection.connected.connect(self._connected)
        connection.signedIn.connect(self._signed_in)
        connection.signedOut.connect(self._signed_out)
        connection.passwordChanged.connect(
            lambda session: self.statusBar().showMessage(f"Password changed; signed in as {session.username}.", 15000))
        connection.failed.connect(self._connection_failed)
        connection.reachable.connect(self._reachability)
        # Watch the appliance while signed in, so "it is down" shows before the next request fails
        # (scripts/demo keeps this window open when the appliance it started dies).
        self.health_timer = QTimer(self)
        self.health_timer.setInterval(health_ms)
        self.health_timer.timeout.connect(connection.check_health)
        workspace.errorOccurred.connect(self.handle_error)
        workspace.statusMessage.connect(lambda text: self.statusBar().showMessage(text, 15000))
        audit.failed.connect(lambda what, exc: self.handle_error(exc))
        admin.failed.connect(lambda what, exc: self.handle_error(exc))
        admin.changed.connect(lambda text: self.statusBar().showMessage(text, 10000))
        # Lists change behind our back (the CLI, another admin): opening the page reads them again.
        self.tabs.currentChanged.connect(self._tab_opened)
        self.dialog: Dialog | None = None
        # An API token handed over by whoever started us (``scripts/demo`` sets ENCLAVE_TOKEN):
        # offered in the sign-in dialog, stored in the keyring only once the user signs in with it.
        self.suggested_token = ""

    # -- banner ----------------------------------------------------------------------------------

    def show_banner(self, text: str, action: str, handler: Callable[[], object],
                    second: tuple[str, Callable[[], object]] | None = None) -> None:
        self.banner_text.setText(text)
        self.banner_action.setText(action)
        self._banner_handler = handler
        self._second_handler = second[1] if second else None
        self.banner_second.setText(second[0] if second else "")
        self.banner_second.setVisible(second is not None)
        self.banner.show()

    def _second_clicked(self) -> None:
        self.banner.hide()
        if self._second_handler is not None:
            self._second_handler()

    def _forget_profile(self) -> None:
        self.connection.forget()
        self.connection_label.setText("Not connected")
        self.action_sign_in.setEnabled(False)
        self.action_sign_out.setEnabled(False)
        self.show_connect()

    def _banner_clicked(self) -> None:
        self.banner.hide()
        if self._banner_handler is not None:
            self._banner_handler()

    # -- dialogs ---------------------------------------------------------------------------------

    def show_connect(self, *, url: str = "", ca_path: str = "") -> ConnectDialog:
        profile = self.connection.profile
        dialog = ConnectDialog(self.connection, self, url=url or (profile.url if profile else ""), ca_path=ca_path)
        self._open_dialog(dialog)
        return dialog

    def show_sign_in(self, message: str = "") -> SignInDialog:
        profile = self.connection.profile
        dialog = SignInDialog(self.connection, self, message=message, username=profile.username if profile else "")
        if self.suggested_token:
            dialog.token.setText(self.suggested_token)
            dialog.tabs.setCurrentIndex(1)
        self._open_dialog(dialog)
        return dialog

    def show_change_password(self, *, forced: bool) -> ChangePasswordDialog:
        dialog = ChangePasswordDialog(self.connection, self, forced=forced)
        dialog.signOutRequested.connect(self.connection.sign_out)
        self._open_dialog(dialog)
        return dialog

    def _open_dialog(self, dialog: Dialog) -> None:
        if self.dialog is not None:
            self.dialog.close()
        self.dialog = dialog
        dialog.finished.connect(lambda _=0, d=dialog: self._dialog_closed(d))
        dialog.open()  # window-modal, non-blocking: tests and the event loop keep running

    def _dialog_closed(self, dialog: Dialog) -> None:
        # The sign-in dialog may finish after the change-password one replaced it: only forget our own.
        dialog.deleteLater()
        if self.dialog is dialog:
            self.dialog = None

    def _choose_project(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open project folder")
        if path:
            self.workspace.project.open(path)

    # -- connection state ------------------------------------------------------------------------

    def _connected(self, profile: Profile) -> None:
        self.connection_label.setText(f"{profile.url} · not signed in")
        self.action_sign_in.setEnabled(True)
        self.banner.hide()
        if self.connection.session is None:
            self.show_banner(f"Connected to {profile.url}.", "Sign in…", self.show_sign_in)

    def _signed_in(self, session: Session) -> None:
        profile = self.connection.profile
        only = " (this session only)" if self.connection.credentials.session_only else ""
        self.connection_label.setText(f"{profile.url if profile else ''} · {session.username}{only}")
        self.action_sign_out.setEnabled(True)
        self.action_password.setEnabled(session.can_change_password)
        self.banner.hide()
        if self._shown_user is not None and self._shown_user != session.username:
            self.clear_views()
        self._shown_user = session.username
        self.workspace.set_session(session)
        # Auditors read, export and decrypt; admins may only verify the chain.
        self.audit_console.set_access(read=session.can_audit, verify=session.can_audit or session.can_admin)
        self.tabs.setTabVisible(self.audit_index, session.can_audit or session.can_admin)
        self.tabs.setTabVisible(self.admin_index, session.can_admin)
        self.health_timer.start()
        if session.must_change_password:
            # Nothing else works until then (the appliance grants only password:change): say so.
            self.show_banner(f"{session.username} must choose a new password before using Enclave.",
                             "Change password…", lambda: self.show_change_password(forced=True))
            if not isinstance(self.dialog, ChangePasswordDialog):
                self.show_change_password(forced=True)
            return
        if session.can_audit:
            self.audit_console.run_search()
        if session.can_admin:
            self.admin_pages.reload()

    def _signed_out(self) -> None:
        self.health_timer.stop()
        profile = self.connection.profile
        self.connection_label.setText(f"{profile.url if profile else ''} · signed out")
        self.action_sign_out.setEnabled(False)
        self.action_password.setEnabled(False)
        self.workspace.set_session(None)
        self.clear_views()
        self.tabs.setTabVisible(self.audit_index, False)
        self.tabs.setTabVisible(self.admin_index, False)
        where = "memory" if self.connection.credentials.session_only else "the keyring"
        self.show_banner(f"Signed out; the token was removed from {where}.", "Sign in…", self.show_sign_in)

    def _tab_opened(self, index: int) -> None:
        session = self.connection.session
        if session is None or session.must_change_password:
            return
        if index == self.admin_index and session.can_admin:
            self.admin_pages.reload()

    def clear_views(self) -> None:
        """Take the signed-in user's data off the screen: answers, history, audit records, users.
        Files and unsaved edits stay (they are the local project's, not the account's)."""
        self._shown_user = None
        self.workspace.clear_user_views()
        self.audit_console.clear()
        self.admin_pages.clear()

    def _reachability(self, up: bool) -> None:
        profile = self.connection.profile
        url = profile.url if profile else "the appliance"
        if up:
            self.banner.hide()
            self.statusBar().showMessage(f"{url} answers again.", 10000)
        else:
            self.show_banner(f"{url} does not answer: the appliance is down or unreachable. Your question "
                             "and edits are kept; nothing is lost.", "Retry", self.connection.check_health)

    def _connection_failed(self, stage: str, exc: BaseException) -> None:
        if stage in ("ca", "connect", "methods", "sign-in", "password") and self.dialog is not None:
            return  # the open dialog shows it next to what the user typed
        if stage == "restore" and isinstance(exc, UnreachableError) and self.connection.profile is not None:
            url = self.connection.profile.url
            self.show_banner(f"{explain(exc)} If {url} is gone for good (a finished demo, say), forget it.",
                             "Retry", self._retry, second=("Forget this appliance…", self._forget_profile))
            return
        self.handle_error(exc)

    def handle_error(self, exc: BaseException) -> None:
        """Show ``exc`` with the way forward."""
        if isinstance(exc, CertificateMismatchError):
            self.show_banner(explain(exc), "Connect…", lambda: self.show_connect())
        elif isinstance(exc, UnreachableError):
            self.show_banner(explain(exc), "Retry", self._retry)
        elif isinstance(exc, PermissionDeniedError) and "password must be changed" in str(exc):
            # An administrator reset the password mid-session: the appliance now refuses everything else.
            if not isinstance(self.dialog, ChangePasswordDialog):
                self.show_change_password(forced=True)
        elif isinstance(exc, AuthError) and not isinstance(exc, ThrottledError):
            self.connection.session_expired()
            self.workspace.set_session(None)
            self.show_banner(f"Your session has ended ({exc}). Your question and edits are kept.", "Sign in…",
                             lambda: self.show_sign_in("Your session has ended; sign in to continue."))
        else:
            self.statusBar().showMessage(explain(exc), 10000)

    def _retry(self) -> None:
        if self.connection.session is None:
            self.connection.restore()
        else:
            self.statusBar().showMessage("Try again.", 5000)

    def closeEvent(self, event: QCloseEvent) -> None:
        unsaved = self.workspace.unsaved()
        if unsaved:
            choice = self.workspace.confirm_discard(unsaved)
            if choice == "cancel":
                event.ignore()
                return
            if choice == "save":
                self.workspace.save_all()
            self.workspace.buffers.clear()
            self.workspace.editor.document().setModified(False)
        self.workspace.project.close()
        super().closeEvent(event)
