"""Admin pages: users (add, disable/enable, role), API tokens (list, revoke), team policies."""

from __future__ import annotations

import json
from typing import Any

from desktop.qt import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from desktop.services.audit import AdminService
from desktop.ui.dialogs import explain

__all__ = ["AdminPages"]

ROLES = ("developer", "auditor", "admin")


def _table(headers: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.verticalHeader().hide()
    t.horizontalHeader().setStretchLastSection(True)
    return t


def _fill(table: QTableWidget, rows: list[list[Any]]) -> None:
    table.setRowCount(len(rows))
    for r, values in enumerate(rows):
        for c, value in enumerate(values):
            table.setItem(r, c, QTableWidgetItem("" if value is None else str(value)))


class AdminPages(QTabWidget):
    def __init__(self, service: AdminService, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.service = service
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.users: list[dict[str, Any]] = []
        self.token_rows: list[dict[str, Any]] = []
        self.team_rows: list[dict[str, Any]] = []

        # users
        self.user_table = _table(["user", "role", "teams", "disabled", "must change password"])
        self.new_name = QLineEdit()
        self.new_name.setPlaceholderText("new user name")
        self.new_role = QComboBox()
        self.new_role.addItems(ROLES)
        self.new_password = QLineEdit()
        self.new_password.setPlaceholderText("password (empty: one-time password)")
        self.new_password.setEchoMode(QLineEdit.EchoMode.Password)
        self.add_user = QPushButton("Add user")
        self.toggle_user = QPushButton("Disable / enable")
        self.role = QComboBox()
        self.role.addItems(ROLES)
        self.set_role = QPushButton("Set role")
        self.refresh = QPushButton("Refresh")
        # The new user's one-time password, shown once to the admin who created the account (the
        # appliance keeps only its hash): copy it, hand it over, then dismiss it.
        self.otp_box = QGroupBox("One-time password")
        self.otp_text = QLabel("")
        self.otp_text.setObjectName("otpText")
        self.otp_text.setWordWrap(True)
        self.otp = QLineEdit()
        self.otp.setObjectName("otp")
        self.otp.setReadOnly(True)
        self.copy_otp = QPushButton("Copy")
        self.dismiss_otp = QPushButton("Done")
        otp_row = QHBoxLayout()
        otp_row.addWidget(self.otp, 1)
        otp_row.addWidget(self.copy_otp)
        otp_row.addWidget(self.dismiss_otp)
        otp_layout = QVBoxLayout(self.otp_box)
        otp_layout.addWidget(self.otp_text)
        otp_layout.addLayout(otp_row)
        self.otp_box.hide()
        users = QWidget()
        ul = QVBoxLayout(users)
        ul.addWidget(self.user_table, 1)
        ul.addWidget(self.otp_box)
        row = QHBoxLayout()
        row.addWidget(self.toggle_user)
        row.addWidget(self.role)
        row.addWidget(self.set_role)
        row.addStretch(1)
        row.addWidget(self.refresh)
        ul.addLayout(row)
        add = QHBoxLayout()
        add.addWidget(self.new_name)
        add.addWidget(self.new_role)
        add.addWidget(self.new_password)
        add.addWidget(self.add_user)
        ul.addLayout(add)
        ul.addWidget(self.status)
        self.addTab(users, "Users")

        # tokens
        self.token_table = _table(["id", "user", "name", "status", "expires", "last used"])
        self.revoke = QPushButton("Revoke selected token")
        tokens = QWidget()
        tl = QVBoxLayout(tokens)
        tl.addWidget(self.token_table, 1)
        tl.addWidget(self.revoke)
        self.addTab(tokens, "Tokens")

        # teams
        self.team_table = _table(["team", "members"])
        self.policy = QPlainTextEdit()
        self.policy.setPlaceholderText('policy fields as JSON, e.g. {"capture_mode": "sealed", "requests_per_minute": 60}')
        self.save_policy = QPushButton("Save policy")
        teams = QWidget()
        pl = QVBoxLayout(teams)
        pl.addWidget(self.team_table, 1)
        pl.addWidget(QLabel("Policy of the selected team"))
        pl.addWidget(self.policy, 1)
        pl.addWidget(self.save_policy)
        self.addTab(teams, "Team policies")

        self.add_user.clicked.connect(self._add)
        self.refresh.clicked.connect(self.reload)
        self.copy_otp.clicked.connect(lambda: QApplication.clipboard().setText(self.otp.text()))
        self.dismiss_otp.clicked.connect(self.hide_otp)
        service.userAdded.connect(self._added)
        self.toggle_user.clicked.connect(self._toggle)
        self.set_role.clicked.connect(self._role)
        self.revoke.clicked.connect(self._revoke)
        self.team_table.itemSelectionChanged.connect(self._team_selected)
        self.save_policy.clicked.connect(self._save_policy)
        service.users.connect(self._users)
        service.tokens.connect(self._tokens)
        service.teams.connect(self._teams)
        service.changed.connect(self.status.setText)
        service.failed.connect(lambda what, exc: self.status.setText(f"{what}: {explain(exc)}"))

    def reload(self) -> None:
        self.service.reload()

    def clear(self) -> None:
        """Forget what the last admin saw (the lists, the one-time password, results)."""
        self.service.forget()
        self.users, self.token_rows, self.team_rows = [], [], []
        for table in (self.user_table, self.token_table, self.team_table):
            table.setRowCount(0)
        self.policy.clear()
        self.status.setText("")
        self.hide_otp()

    def hide_otp(self) -> None:
        self.otp.clear()
        self.otp_box.hide()

    def _added(self, username: str, otp: str | None) -> None:
        self.new_name.clear()
        if otp:
            self.otp_text.setText(f"{username}'s one-time password. It is shown only now: give it to {username}, "
                                  "who must change it at first sign-in.")
            self.otp.setText(otp)
        else:
            self.otp_text.setText(f"{username} signs in with the password you chose and must change it at "
                                  "first sign-in.")
            self.otp.clear()
        self.otp.setVisible(bool(otp))
        self.copy_otp.setVisible(bool(otp))
        self.otp_box.show()

    @staticmethod
    def _row(table: QTableWidget) -> int | None:
        rows = table.selectionModel().selectedRows()
        return rows[0].row() if rows else None

    def _users(self, users: list[dict[str, Any]]) -> None:
        self.users = users
        _fill(self.user_table, [[u["username"], u["role"], ", ".join(u.get("teams", [])), u["disabled"],
                                 u.get("must_change_password", False)] for u in users])

    def _tokens(self, tokens: list[dict[str, Any]]) -> None:
        self.token_rows = tokens
        _fill(self.token_table, [[t["id"], t["username"], t["name"], t["status"], t["expires_at"], t.get("last_used_at")] for t in tokens])

    def _teams(self, teams: list[dict[str, Any]]) -> None:
        self.team_rows = teams
        _fill(self.team_table, [[t["name"], ", ".join(t.get("members", []))] for t in teams])

    def _add(self) -> None:
        name = self.new_name.text().strip()
        if not name:
            self.status.setText("Type the new user's name.")
            return
        self.service.add_user(name, self.new_role.currentText(), self.new_password.text() or None)
        self.new_password.clear()

    def _toggle(self) -> None:
        row = self._row(self.user_table)
        if row is not None:
            user = self.users[row]
            self.service.set_disabled(user["username"], not user["disabled"])

    def _role(self) -> None:
        row = self._row(self.user_table)
        if row is not None:
            self.service.set_role(self.users[row]["username"], self.role.currentText())

    def _revoke(self) -> None:
        row = self._row(self.token_table)
        if row is not None:
            self.service.revoke(int(self.token_rows[row]["id"]))

    def _team_selected(self) -> None:
        row = self._row(self.team_table)
        if row is not None:
            self.policy.setPlainText(json.dumps(self.team_rows[row].get("policy") or {}, indent=2))

    def _save_policy(self) -> None:
        row = self._row(self.team_table)
        if row is None:
            self.status.setText("Select a team first.")
            return
        try:
            changes = json.loads(self.policy.toPlainText() or "{}")
        except ValueError as exc:
            self.status.setText(f"The policy is not valid JSON: {exc}")
            return
        if not isinstance(changes, dict):
            self.status.setText("The policy must be a JSON object.")
            return
        self.service.set_policy(self.team_rows[row]["name"], changes)
