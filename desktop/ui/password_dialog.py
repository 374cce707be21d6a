"""Changing one's password: forced after sign-in with a one-time password, or chosen from the menu.

Forced, it cannot be dismissed into an empty window: the way out is to change the password or to
sign out. A refusal (wrong current password, a new one the appliance's rules reject) shows above
the fields, which keep what was typed.
"""

from __future__ import annotations

from desktop.qt import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
    Signal,
)
from desktop.services.connection import ConnectionService
from desktop.ui.dialogs import error_label, explain
from shared.errors import AuthError, ThrottledError

__all__ = ["ChangePasswordDialog"]


class ChangePasswordDialog(QDialog):
    signOutRequested = Signal()

    def __init__(self, service: ConnectionService, parent: QWidget | None = None, *, forced: bool) -> None:
        super().__init__(parent)
        self.setWindowTitle("Change your password")
        self._service = service
        self.forced = forced
        who = service.session.username if service.session else ""
        self.message = QLabel(
            f"{who}, your administrator gave you a one-time password. Choose your own password to start "
            "using Enclave." if forced else "Choose a new password. Your other sign-ins will be ended."
        )
        self.message.setObjectName("message")
        self.message.setWordWrap(True)
        self.error = error_label()
        self.current = QLineEdit()
        self.new = QLineEdit()
        self.confirm = QLineEdit()
        for field in (self.current, self.new, self.confirm):
            field.setEchoMode(QLineEdit.EchoMode.Password)
        form = QFormLayout()
        form.addRow("One-time password" if forced else "Current password", self.current)
        form.addRow("New password", self.new)
        form.addRow("New password again", self.confirm)
        self.change = QPushButton("Change password")
        self.change.setDefault(True)
        self.leave = QPushButton("Sign out" if forced else "Cancel")
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.leave)
        buttons.addWidget(self.change)
        layout = QVBoxLayout(self)
        layout.addWidget(self.message)
        layout.addWidget(self.error)
        layout.addLayout(form)
        layout.addLayout(buttons)
        self.setMinimumWidth(480)
        self.change.clicked.connect(self._submit)
        self.leave.clicked.connect(self.reject)
        service.passwordChanged.connect(self._done)
        service.failed.connect(self._failed)

    def _submit(self) -> None:
        self.error.hide()
        if not self.current.text() or not self.new.text():
            self._show("Type the current password and the new one.")
            return
        if self.new.text() != self.confirm.text():
            self._show("The two new passwords differ; type the same one twice.")
            return
        self.change.setEnabled(False)
        self._service.change_password(self.current.text(), self.new.text())

    def _show(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()

    def reject(self) -> None:
        # Sign out, Esc or the window's close button, when forced: signing out, never an empty window.
        if self.forced and self._service.session is not None:
            self.forced = False
            self.signOutRequested.emit()
        super().reject()

    def _done(self) -> None:
        for field in (self.current, self.new, self.confirm):
            field.clear()
        self.forced = False
        self.accept()

    def _failed(self, stage: str, exc: BaseException) -> None:
        if stage != "password":
            return
        if isinstance(exc, AuthError) and not isinstance(exc, ThrottledError):
            self._show(f"{exc}. Check the {'one-time' if self.forced else 'current'} password and try again.")
        else:
            self._show(explain(exc))
        self.change.setEnabled(True)
