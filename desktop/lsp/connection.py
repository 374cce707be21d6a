"""The language server's link to the appliance: the desktop client's connection profile (URL and
pinned CA, :class:`desktop.client.profile.ProfileStore`) and its keyring credential
(:class:`desktop.client.credentials.CredentialStore`), so signing in once — in the desktop window,
an editor, or ``enclave-lsp sign-in`` — serves all of them.

What went wrong is said once, in words a user can act on (``problem``), and said again only after
something worked in between: an editor asking for a completion on every keystroke must not get a
pop-up on every keystroke.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from desktop.client.aio import AsyncApplianceClient
from desktop.client.credentials import CredentialStore
from desktop.client.errors import CertificateMismatchError, UnreachableError
from desktop.client.methods import account_for
from desktop.client.profile import Profile, ProfileStore, normalize_url
from desktop.client.tls import ca_fingerprint
from shared.errors import AuthError, InputError, PermissionDeniedError, UpstreamError

__all__ = ["Connection", "SessionInfo", "describe"]

SIGN_IN_HINT = "run the command 'Enclave: Sign in' (enclave.signIn) or `enclave-lsp sign-in`"


@dataclass(frozen=True)
class SessionInfo:
    url: str
    username: str
    role: str
    model: str
    context_length: int | None
    path_exclusions: tuple[str, ...]
    capture_mode: str
    expires_at: dt.datetime


def describe(exc: BaseException, url: str = "") -> str:
    """One line for the editor about a failure talking to the appliance."""
    if isinstance(exc, AuthError):
        return f"Enclave: your sign-in to {url or 'the appliance'} has expired or was revoked; {SIGN_IN_HINT}"
    if isinstance(exc, UnreachableError):
        return f"Enclave: {exc}; completions resume when it answers"
    if isinstance(exc, UpstreamError):
        return f"Enclave: the appliance cannot use the site directory ({exc}); try again later or ask your administrator"
    if isinstance(exc, CertificateMismatchError):
        return f"Enclave: {exc}. Do not sign in; ask your administrator"
    if isinstance(exc, PermissionDeniedError):
        return f"Enclave: the appliance refused: {exc}"
    return f"Enclave: {exc}"


class Connection:
    def __init__(
        self,
        profiles: ProfileStore,
        credentials: CredentialStore,
        *,
        notify: Callable[[str, bool], None],
        client_factory: Callable[..., AsyncApplianceClient] = AsyncApplianceClient,
    ) -> None:
        self._profiles = profiles
        self._credentials = credentials
        self._notify = notify  # (message, is_error)
        self._factory = client_factory
        self._client: AsyncApplianceClient | None = None
        self._session: SessionInfo | None = None
        self._said: str | None = None
        self.model_preference = ""
        # The editor's ``account`` setting ("ldap", "local"; "": the profile's, else the appliance's offer).
        self.account_preference = ""

    # -- problems, said once -----------------------------------------------------------------------

    def problem(self, exc: BaseException) -> str:
        """Report ``exc`` to the user unless the same was just said; an expired credential is dropped."""
        url = self._client.base_url if self._client else ""
        message = describe(exc, url)
        if isinstance(exc, AuthError):
            self._session = None
        if message != self._said:
            self._said = message
            self._notify(message, True)
        return message

    def ok(self) -> None:
        self._said = None

    # -- the client and the session ----------------------------------------------------------------

    def _profile(self) -> Profile:
        profile = self._profiles.load()
        if profile is None:
            raise InputError(
                "Enclave: no appliance is set up; connect once with the desktop client, the command "
                "enclave.connect or `enclave-lsp connect URL CA_FILE --fingerprint FP`"
            )
        return profile

    def _make(self, profile: Profile, token: str | None) -> AsyncApplianceClient:
        return self._factory(profile.url, ca_file=self._profiles.ca_file, token=token, ca_fingerprint=profile.ca_fingerprint)

    async def client(self) -> AsyncApplianceClient:
        """The signed-in client (an error saying what to do when there is none)."""
        if self._client is not None and self._client.token:
            return self._client
        profile = self._profile()
        token = self._credentials.load(profile.url)
        if not token:
            raise AuthError(f"not signed in to {profile.url}")
        await self._replace(self._make(profile, token))
        assert self._client is not None
        return self._client

    async def _replace(self, client: AsyncApplianceClient | None) -> None:
        old, self._client, self._session = self._client, client, None
        if old is not None and old is not client:
            await old.aclose()

    async def session(self) -> SessionInfo:
        if self._session is not None:
            return self._session
        client = await self.client()
        me = await client.me()
        models = await client.models() if "models:read" in me.permissions else []
        if not models:
            raise PermissionDeniedError(f"no model is available to {me.username} on {client.base_url}")
        chosen = next((m for m in models if m.id == self.model_preference), models[0])
        self._session = SessionInfo(
            url=client.base_url, username=me.username, role=me.role, model=chosen.id,
            context_length=chosen.context_length, path_exclusions=tuple(me.policy.path_exclusions),
            capture_mode=me.policy.capture_mode, expires_at=me.expires_at,
        )
        return self._session

    def forget_session(self) -> None:
        """Ask the appliance again next time (the model list or the policy may have changed)."""
        self._session = None

    # -- connect, sign in, sign out ------------------------------------------------------------------

    async def connect(self, url: str, ca_file: str, fingerprint: str) -> Profile:
        """Pin ``ca_file`` for ``url`` once its fingerprint is the one the user confirmed, after
        checking the appliance answers with a certificate it issued."""
        clean = normalize_url(url)
        try:
            pem = Path(ca_file).expanduser().read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {ca_file}: {exc.strerror or exc}") from None
        actual = ca_fingerprint(pem)
        if actual.replace(":", "").upper() != fingerprint.replace(":", "").strip().upper():
            raise InputError(f"the CA's fingerprint is {actual}, not the one given: it is not pinned")
        probe = self._factory(clean, ca_file=Path(ca_file).expanduser(), token=None, ca_fingerprint=actual)
        try:
            await probe.health()
        finally:
            await probe.aclose()
        profile = Profile(clean, actual)
        self._profiles.save(profile, pem)
        await self._replace(None)
        return profile

    async def sign_in_token(self, token: str) -> SessionInfo:
        token = token.strip()
        if not token:
            raise InputError("give an API token (it starts with encl_)")
        profile = self._profile()
        await self._replace(self._make(profile, token))
        try:
            info = await self.session()  # proves the token works before it is stored
        except BaseException:
            await self._replace(None)
            raise
        self._credentials.save(profile.url, token)
        self.ok()
        return info

    async def sign_in_password(self, username: str, password: str, account: str = "") -> SessionInfo:
        """Sign in with a local account's password or (``account="ldap"``) the directory's. Without
        ``account``: the editor's setting, else the one the profile remembers (shared with the desktop
        client), else the directory when the appliance offers one."""
        profile = self._profile()
        probe = self._make(profile, None)
        try:
            chosen = account or self.account_preference
            methods = None if chosen else await probe.auth_methods()
            kind = account_for(methods, chosen, profile.account)
            token = (await probe.login(username, password, kind)).token
        finally:
            await probe.aclose()
        info = await self.sign_in_token(token)
        remembered = dataclasses.replace(profile, username=info.username, account=kind)
        if remembered != profile:
            self._profiles.save(remembered, self._profiles.ca_file.read_bytes())
        return info

    async def sign_out(self) -> None:
        profile = self._profile()
        self._credentials.delete(profile.url)
        await self._replace(None)

    async def close(self) -> None:
        await self._replace(None)
