"""Connecting to an appliance, pinning its CA, signing in and out.

States: no profile -> (inspect CA, user confirms fingerprint, connect) -> connected -> (sign in)
-> signed in. The session or API token lives in the keyring only; the profile file holds the URL,
the fingerprint, the last user name and which account kind (directory or local) their password was for.
Before sign-in, ``load_methods`` asks which sign-ins the appliance offers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desktop.client.api import ApplianceClient
from desktop.client.credentials import CredentialStore
from desktop.client.errors import UnreachableError
from desktop.client.methods import Account
from desktop.client.profile import Profile, ProfileStore, normalize_url
from desktop.client.tls import ca_fingerprint
from desktop.qt import QObject, QThreadPool, Signal
from desktop.services.worker import Job, submit
from shared.errors import AuthError, EnclaveError, InputError
from shared.schemas import Me

__all__ = ["ClientFactory", "ConnectionService", "Session"]

ClientFactory = Callable[..., ApplianceClient]


@dataclass(frozen=True)
class Session:
    username: str
    models: list[str]
    role: str = ""
    permissions: frozenset[str] = frozenset()
    # The server policy's exclusions: files matching them are never indexed or sent.
    path_exclusions: tuple[str, ...] = ()
    me: Me | None = None
    # Tokens each model takes (from /v1/models, where the appliance reports it).
    context_lengths: dict[str, int] = field(default_factory=dict)
    # A one-time password (set by an administrator) must be replaced before anything else works.
    must_change_password: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def can_audit(self) -> bool:
        return "audit:read" in self.permissions

    @property
    def can_admin(self) -> bool:
        return "users:manage" in self.permissions

    @property
    def can_change_password(self) -> bool:
        return "password:change" in self.permissions


class ConnectionService(QObject):
    caInspected = Signal(str, str)  # path, fingerprint
    connected = Signal(object)  # Profile
    signedIn = Signal(object)  # Session
    signedOut = Signal()
    passwordChanged = Signal(object)  # Session (signed in again with the new password)
    forgotten = Signal()  # the saved profile was removed
    reachable = Signal(bool)  # the appliance went down (False) or came back (True)
    methodsKnown = Signal(object)  # AuthMethods, or None from an appliance that does not say
    # stage ("ca", "connect", "restore", "methods", "sign-in", "password", "sign-out"), exception
    failed = Signal(str, object)

    def __init__(
        self,
        *,
        profiles: ProfileStore,
        credentials: CredentialStore,
        pool: QThreadPool,
        client_factory: ClientFactory = ApplianceClient,
        open_browser: Callable[[str], object] = webbrowser.open,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._open_browser = open_browser
        self._profiles = profiles
        self._credentials = credentials
        self._pool = pool
        self._factory = client_factory
        self.profile: Profile | None = None
        self.session: Session | None = None
        self._client: ApplianceClient | None = None
        self.up = True
        self._checking = False

    # -- helpers ---------------------------------------------------------------------------------

    def _run(self, stage: str, fn: Callable[[Job], Any], on_done: Callable[[Any], None]) -> Job:
        return submit(self._pool, fn, on_done=on_done, on_failed=lambda exc: self.failed.emit(stage, exc), parent=self)

    def _make_client(self, profile: Profile, token: str | None) -> ApplianceClient:
        return self._factory(
            profile.url, ca_file=self._profiles.ca_file, token=token, ca_fingerprint=profile.ca_fingerprint
        )

    @property
    def credentials(self) -> CredentialStore:
        """Where tokens are kept (the sign-in dialog offers session-only when it has no OS keyring)."""
        return self._credentials

    @property
    def client(self) -> ApplianceClient:
        if self._client is None or self.session is None:
            raise AuthError("not signed in")
        return self._client

    # -- first connection ------------------------------------------------------------------------

    def inspect_ca(self, path: str) -> None:
        """Read a CA file and report its fingerprint, for the user to compare before trusting it."""

        def work(job: Job) -> tuple[str, str]:
            try:
                pem = Path(path).expanduser().read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
            return path, ca_fingerprint(pem)

        self._run("ca", work, lambda r: self.caInspected.emit(*r))

    def connect_to(self, url: str, ca_path: str, confirmed_fingerprint: str) -> None:
        """Pin the CA the user confirmed and check the appliance answers with a certificate from it."""

        def work(job: Job) -> Profile:
            clean = normalize_url(url)
            try:
                pem = Path(ca_path).expanduser().read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read {ca_path}: {exc.strerror or exc}") from None
            fingerprint = ca_fingerprint(pem)
            if fingerprint != confirmed_fingerprint:
                raise InputError("the CA file changed after its fingerprint was shown; inspect it again")
            # Check against a scratch copy first, so a failed attempt leaves the old pin in place.
            scratch = self._profiles.dir / "candidate-ca.pem"
            self._profiles.dir.mkdir(parents=True, exist_ok=True)
            scratch.write_bytes(pem)
            try:
                probe = self._factory(clean, ca_file=scratch, token=None, ca_fingerprint=fingerprint)
                try:
                    probe.health()
                finally:
                    probe.close()
            finally:
                scratch.unlink(missing_ok=True)
            old = self.profile
            same = old if old is not None and old.url == clean else None
            profile = Profile(clean, fingerprint, same.username if same else "", same.account if same else "")
            self._profiles.save(profile, pem)
            return profile

        def done(profile: Profile) -> None:
            self._set_profile(profile)
            self.connected.emit(profile)

        self._run("connect", work, done)

    def _set_profile(self, profile: Profile) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self.session = None
        self.profile = profile

    # -- start-up --------------------------------------------------------------------------------

    def restore(self) -> bool:
        """Load the saved profile; sign in with the stored token if there is one.

        Returns False when there is no profile (the UI then asks for a first connection).
        """
        try:
            profile = self._profiles.load()
        except EnclaveError as exc:
            self.failed.emit("restore", exc)
            return False
        if profile is None:
            return False
        self._set_profile(profile)
        self.connected.emit(profile)
        self._resume()
        return True

    def check_health(self) -> None:
        """Ask the appliance whether it is up; ``reachable`` says so when the answer changes."""
        client = self._client
        if client is None or self._checking:
            return
        self._checking = True

        def work(job: Job) -> bool:
            try:
                client.health()
            except UnreachableError:
                return False
            return True

        def done(up: bool) -> None:
            self._checking = False
            if up != self.up:
                self.up = up
                self.reachable.emit(up)

        submit(self._pool, work, on_done=done, on_failed=lambda exc: setattr(self, "_checking", False), parent=self)

    def has_saved(self) -> bool:
        """A saved profile exists (damaged ones count: restore() then says what is wrong)."""
        return self._profiles.file.exists()

    def matches_saved(self, url: str, ca_path: str = "") -> bool:
        """The saved profile is for ``url`` and, when ``ca_path`` is given, pins that very CA."""
        try:
            saved = self._profiles.load()
        except EnclaveError:
            return False
        if saved is None or saved.url != url:
            return False
        if not ca_path:
            return True
        try:
            return ca_fingerprint(Path(ca_path).expanduser().read_bytes()) == saved.ca_fingerprint
        except (OSError, EnclaveError):
            return False

    def forget(self) -> None:
        """Remove the saved profile and its token (a dead appliance the user no longer wants offered)."""
        profile = self.profile
        if profile is not None:
            # The profile goes regardless; a keyring that cannot delete is no reason to keep it.
            with contextlib.suppress(EnclaveError):
                self._credentials.delete(profile.url)
        if self._client is not None:
            self._client.close()
        self._client = None
        self.session = None
        self.profile = None
        self._profiles.forget()
        self.forgotten.emit()

    def _resume(self) -> None:
        profile = self.profile
        assert profile is not None

        def work(job: Job) -> tuple[ApplianceClient, Session] | None:
            token = self._credentials.load(profile.url)
            if not token:
                return None
            client = self._make_client(profile, token)
            return client, self._session_for(client)

        self._run("restore", work, self._signed_in_or_none)

    def _signed_in_or_none(self, result: tuple[ApplianceClient, Session] | None) -> None:
        if result is not None:
            self._signed_in(result)

    # -- sign-in / sign-out ----------------------------------------------------------------------

    def _session_for(self, client: ApplianceClient) -> Session:
        # /v1/auth/me also proves the token works (401: expired or revoked) and says which pages
        # to show, without probing routes this credential may not use.
        me = client.me()
        models = client.models() if "models:read" in me.permissions else []
        contexts = client.model_context_lengths() if models else {}
        return Session(
            username=me.username,
            models=models,
            context_lengths=contexts,
            role=me.role,
            permissions=frozenset(me.permissions),
            path_exclusions=tuple(me.policy.path_exclusions),
            me=me,
            must_change_password=me.must_change_password,
        )

    def _signed_in(self, result: tuple[ApplianceClient, Session]) -> None:
        client, session = result
        if self._client is not None and self._client is not client:
            self._client.close()
        self._client = client
        self.session = session
        self.signedIn.emit(session)

    def load_methods(self) -> None:
        """Ask the appliance which sign-ins it offers; ``methodsKnown`` carries the answer."""
        profile = self._require_profile()

        def work(job: Job) -> object:
            probe = self._make_client(profile, None)
            try:
                return probe.auth_methods()
            finally:
                probe.close()

        self._run("methods", work, self.methodsKnown.emit)

    def sign_in_password(self, username: str, password: str, account: Account = "local") -> None:
        """Sign in with a password: a local Enclave account's, or (``account="ldap"``) the directory's."""
        profile = self._require_profile()

        def work(job: Job) -> tuple[ApplianceClient, Session]:
            client = self._make_client(profile, None)
            login = client.login_ldap if account == "ldap" else client.login
            client.token = login(username, password).token
            try:
                self._credentials.save(profile.url, client.token)
            except EnclaveError:
                client.logout()  # a session nobody can use again is not left alive on the server
                raise
            return client, self._session_for(client)

        self._run("sign-in", work, lambda result: self._after_sign_in(result, account))

    def sign_in_token(self, token: str) -> None:
        profile = self._require_profile()

        def work(job: Job) -> tuple[ApplianceClient, Session]:
            if not token.strip():
                raise InputError("paste an API token (it starts with encl_)")
            client = self._make_client(profile, token.strip())
            session = self._session_for(client)
            self._credentials.save(profile.url, token.strip())
            return client, session

        self._run("sign-in", work, self._after_sign_in)

    def sign_in_sso(self) -> None:
        """Sign in through the site's identity provider in the system browser (a loopback redirect)."""
        profile = self._require_profile()

        def work(job: Job) -> tuple[ApplianceClient, Session]:
            client = self._make_client(profile, None)
            client.token = client.sign_in_browser(self._open_browser)
            try:
                self._credentials.save(profile.url, client.token)
            except EnclaveError:
                client.logout()  # as for a password: no session left alive that nobody can use
                raise
            return client, self._session_for(client)

        self._run("sign-in", work, self._after_sign_in)

    def _after_sign_in(self, result: tuple[ApplianceClient, Session], account: Account | None = None) -> None:
        profile = self._require_profile()
        # A token or SSO sign-in says nothing about which account a password is for: keep the last.
        remembered = dataclasses.replace(profile, username=result[1].username, account=account or profile.account)
        if remembered != profile:
            self.profile = remembered
            self._profiles.save(self.profile, self._profiles.ca_file.read_bytes())
        self._signed_in(result)

    def change_password(self, old: str, new: str) -> None:
        """Change the signed-in user's password, then carry on signed in with the new one (the appliance
        ends every login session of the user when the password changes, this one included)."""
        profile = self._require_profile()
        client, session = self._client, self.session

        def work(job: Job) -> tuple[ApplianceClient, Session]:
            if client is None or session is None:
                raise AuthError("not signed in")
            if not new:
                raise InputError("type the new password")
            client.change_password(old, new)
            if session.me is None or session.me.credential == "session":
                client.token = client.login(session.username, new).token
                self._credentials.save(profile.url, client.token)
            return client, self._session_for(client)

        def done(result: tuple[ApplianceClient, Session]) -> None:
            self._signed_in(result)
            self.passwordChanged.emit(result[1])

        self._run("password", work, done)

    def sign_out(self) -> None:
        profile = self._require_profile()
        client = self._client

        def work(job: Job) -> None:
            try:
                if client is not None and client.token:
                    client.logout()
            except EnclaveError:
                pass  # the server may be gone or the token already dead: forgetting it locally is what matters
            finally:
                self._credentials.delete(profile.url)

        def done(_: Any) -> None:
            if self._client is not None:
                self._client.close()
            self._client = None
            self.session = None
            self.signedOut.emit()

        self._run("sign-out", work, done)

    def session_expired(self) -> None:
        """Another service got a 401: drop the dead token so the next start asks to sign in."""
        if self.profile is not None:
            self._credentials.delete(self.profile.url)
        self.session = None

    def _require_profile(self) -> Profile:
        if self.profile is None:
            raise InputError("connect to an appliance first")
        return self.profile
