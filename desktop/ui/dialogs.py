"""First connection (URL + CA fingerprint to confirm) and sign-in (password or API token).

Sign-in shows what the appliance offers (``GET /v1/auth/methods``): with a directory configured the
password is for a directory account or a local one (the user picks; the directory first, then the
last choice); the SSO button only where single sign-on is configured. An appliance that does not say
gets the password (local) and the SSO button, as before.

Both dialogs keep what the user typed when something fails: the error shows above the fields with
what to do next, and the fields stay as they were.
"""

from __future__ import annotations

from desktop.client.credentials import KeyringUnavailableError
from desktop.client.errors import CertificateMismatchError, UnreachableError
from desktop.client.methods import Account, account_for, directory_name, offers_sso
from desktop.qt import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    Qt,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from desktop.services.connection import ConnectionService
from shared.errors import AuthError, InputError, ThrottledError, UpstreamError
from shared.schemas import AuthMethods

__all__ = ["ConnectDialog", "SignInDialog", "error_label", "explain"]


def explain(exc: BaseException) -> str:
    """A message for the user: what happened and the way forward."""
    if isinstance(exc, CertificateMismatchError):
        return (f"{exc}. Do not sign in. Ask your administrator for the appliance's CA fingerprint, "
                "then use Connect… to pin the right CA.")
    if isinstance(exc, UnreachableError):
        return f"{exc}. Check the address and that the appliance is running, then try again."
    if isinstance(exc, ThrottledError):
        return f"{exc}. Wait {exc.retry_after:.0f} s and try again."
    if isinstance(exc, UpstreamError):
        return (f"The appliance cannot use the site directory ({exc}). Try again later, or ask your "
                "administrator; a local Enclave account still signs in.")
    if isinstance(exc, AuthError):
        return f"{exc}. Sign in again; your text is kept."
    return str(exc) or type(exc).__name__


def error_label() -> QLabel:
    """The red line above a dialog's fields that says what went wrong and what to do."""
    label = QLabel()
    label.setObjectName("error")
    label.setWordWrap(True)
    label.setStyleSheet("color: #b00020")
    label.hide()
    return label


class ConnectDialog(QDialog):
    def __init__(self, service: ConnectionService, parent: QWidget | None = None, *, url: str = "", ca_path: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Connect to an Enclave appliance")
        self._service = service
        self.url = QLineEdit(url)
        self.url.setPlaceholderText("https://enclave.example.internal:8443")
        self.ca_path = QLineEdit(ca_path)
        self.ca_path.setPlaceholderText("ca.pem from your administrator")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.inspect = QPushButton("Show fingerprint")
        self.inspect.clicked.connect(self._inspect)
        self.fingerprint = QLabel("—")
        self.fingerprint.setWordWrap(True)
        self.fingerprint.setObjectName("fingerprint")
        self.confirm = QCheckBox("This matches the fingerprint my administrator gave me")
        self.confirm.setEnabled(False)
        self.connect_button = QPushButton("Connect")
        self.connect_button.setEnabled(False)
        self.connect_button.clicked.connect(self._connect)
        self.confirm.toggled.connect(self.connect_button.setEnabled)
        self.error = error_label()
        ca_row = QHBoxLayout()
        ca_row.addWidget(self.ca_path)
        ca_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Appliance URL", self.url)
        form.addRow("CA certificate", ca_row)
        form.addRow("", self.inspect)
        form.addRow("SHA-256 fingerprint", self.fingerprint)
        layout = QVBoxLayout(self)
        layout.addWidget(self.error)
        layout.addLayout(form)
        layout.addWidget(self.confirm)
        layout.addWidget(self.connect_button)
        self._fp = ""
        service.caInspected.connect(self._inspected)
        service.connected.connect(self._connected)
        service.failed.connect(self._failed)
        self.ca_path.textChanged.connect(self._reset)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "CA certificate", "", "PEM (*.pem *.crt);;All files (*)")
        if path:
            self.ca_path.setText(path)
            self._inspect()

    def _reset(self) -> None:
        self._fp = ""
        self.fingerprint.setText("—")
        self.confirm.setChecked(False)
        self.confirm.setEnabled(False)

    def _inspect(self) -> None:
        self.error.hide()
        self._service.inspect_ca(self.ca_path.text())

    def _inspected(self, path: str, fingerprint: str) -> None:
        if path != self.ca_path.text():
            return
        self._fp = fingerprint
        self.fingerprint.setText(fingerprint)
        self.confirm.setEnabled(True)

    def _connect(self) -> None:
        if not self._fp or not self.confirm.isChecked():
            self._failed("connect", InputError("compare and confirm the CA fingerprint first"))
            return
        self.error.hide()
        self.connect_button.setEnabled(False)
        self._service.connect_to(self.url.text(), self.ca_path.text(), self._fp)

    def _connected(self) -> None:
        self.accept()

    def _failed(self, stage: str, exc: BaseException) -> None:
        if stage not in ("ca", "connect"):
            return
        self.error.setText(explain(exc))
        self.error.show()
        self.connect_button.setEnabled(self.confirm.isChecked())


class SignInDialog(QDialog):
    def __init__(self, service: ConnectionService, parent: QWidget | None = None, *, message: str = "", username: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Sign in to Enclave")
        self._service = service
        self.message = QLabel(message)
        self.message.setWordWrap(True)
        self.message.setVisible(bool(message))
        self.error = error_label()
        self.username = QLineEdit(username)
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("encl_…")
        # Shown only when the appliance offers a directory: the name alone does not say which account.
        self.account = QComboBox()
        self.account.addItem("Directory account (LDAP / Active Directory)", "ldap")
        self.account.addItem("Local Enclave account", "local")
        self.tabs = QTabWidget()
        pw = QWidget()
        self._pw_form = QFormLayout(pw)
        self._pw_form.addRow("Account", self.account)
        self._pw_form.addRow("User name", self.username)
        self._pw_form.addRow("Password", self.password)
        self._pw_form.setRowVisible(self.account, False)
        self._directory: str | None = None  # the directory's name, once the appliance says it offers one
        tk = QWidget()
        tk_form = QFormLayout(tk)
        tk_form.addRow("API token", self.token)
        self.tabs.addTab(pw, "Password")
        self.tabs.addTab(tk, "API token")
        # No OS keyring: say so up front and offer a session-only sign-in (memory only, never disk).
        self.keyring_note = QLabel()
        self.keyring_note.setObjectName("keyringNote")
        self.keyring_note.setWordWrap(True)
        self.session_only = QCheckBox("Sign in for this session only (the token stays in memory and is "
                                      "forgotten when Enclave closes)")
        self._offer_session_only(service.credentials.problem)
        self.sign_in = QPushButton("Sign in")
        self.sign_in.setDefault(True)
        self.sign_in.clicked.connect(self._submit)
        # The site's identity provider, in the system browser (never a web view in this window).
        self.sso = QPushButton("Sign in with SSO…")
        self.sso.setToolTip("Opens your browser at your organisation's sign-in page")
        self.sso.clicked.connect(self._submit_sso)
        layout = QVBoxLayout(self)
        layout.addWidget(self.message)
        layout.addWidget(self.error)
        layout.addWidget(self.tabs)
        layout.addWidget(self.keyring_note)
        layout.addWidget(self.session_only)
        layout.addWidget(self.sign_in)
        layout.addWidget(self.sso)
        # Wide enough that a wrapped error never squeezes the fields (seen clipped on a plain X session).
        self.setMinimumWidth(520)
        service.signedIn.connect(self._done)
        service.failed.connect(self._failed)
        service.methodsKnown.connect(self._methods_known)
        if service.profile is not None:
            service.load_methods()

    @property
    def offers_directory(self) -> bool:
        return self._directory is not None

    def _methods_known(self, methods: AuthMethods | None) -> None:
        directory = self._directory = directory_name(methods)
        self._pw_form.setRowVisible(self.account, directory is not None)
        if directory is not None:
            self.account.setItemData(0, f"Your organisation's directory: {directory}", Qt.ItemDataRole.ToolTipRole)
            profile = self._service.profile
            chosen = account_for(methods, remembered=profile.account if profile else "")
            self.account.setCurrentIndex(self.account.findData(chosen))
        self.sso.setVisible(offers_sso(methods))

    def _offer_session_only(self, problem: str | None) -> None:
        if problem is None:
            self.keyring_note.hide()
            self.session_only.hide()
            return
        self.keyring_note.setText(f"Your sign-in cannot be remembered: {problem}. You can still sign in "
                                  "for this session; you will be asked again next time.")
        self.keyring_note.show()
        self.session_only.show()
        self.session_only.setChecked(True)

    def _start(self) -> None:
        self.error.hide()
        if not self.session_only.isHidden() and self.session_only.isChecked():
            self._service.credentials.use_session_only()
        self.sign_in.setEnabled(False)
        self.sso.setEnabled(False)

    def _submit_sso(self) -> None:
        self._start()
        self.message.setText("Finish signing in in your browser; this window continues when it is done.")
        self.message.show()
        self._service.sign_in_sso()

    def _submit(self) -> None:
        self._start()
        if self.tabs.currentIndex() == 0:
            account: Account = "ldap" if self.offers_directory and self.account.currentData() == "ldap" else "local"
            self._service.sign_in_password(self.username.text(), self.password.text(), account)
        else:
            self._service.sign_in_token(self.token.text())

    def _done(self) -> None:
        self.password.clear()  # the one thing we do not keep around once used
        self.accept()

    def _refusal(self, exc: BaseException) -> str:
        if not isinstance(exc, AuthError) or isinstance(exc, ThrottledError):
            return explain(exc)
        if self.tabs.currentIndex() == 0 and self.offers_directory:
            kind = "a directory" if self.account.currentData() == "ldap" else "a local Enclave"
            return f"{exc} as {kind} account. Check the user name and password, or pick the other account, and try again."
        return f"{exc}. Check the user name and password (or the token) and try again."

    def _failed(self, stage: str, exc: BaseException) -> None:
        if stage == "methods":
            # Nothing is known about what is offered: the fields stay as before; say why.
            self.error.setText(explain(exc))
            self.error.show()
            return
        if stage != "sign-in":
            return
        if isinstance(exc, KeyringUnavailableError) and not self._service.credentials.session_only:
            # The keyring refused at save time (locked, daemon gone): same offer, fields kept.
            self._offer_session_only(str(exc))
        self.error.setText(self._refusal(exc))
        self.error.show()
        self.sign_in.setEnabled(True)
        self.sso.setEnabled(True)
