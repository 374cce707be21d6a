"""Session and API tokens in the operating system's keyring, never in a file of ours.

One secret per appliance URL under the service name ``enclave-desktop``. The keyring backend is
passed in (tests give an in-memory one; the app uses whatever ``keyring`` selects for the OS).

Where there is no OS keyring (a plain X session without a Secret Service daemon, a container), the
store says so (:attr:`CredentialStore.problem`) and can switch to *session-only*: the token is kept
in this process's memory and forgotten when the client closes, so the user can still work and is
asked to sign in at the next start. It is never written to disk.
"""

from __future__ import annotations

import keyring
from keyring.backend import KeyringBackend
from keyring.errors import KeyringError, PasswordDeleteError

from shared.errors import ConfigError

__all__ = ["SERVICE", "CredentialStore", "KeyringUnavailableError"]

SERVICE = "enclave-desktop"


class KeyringUnavailableError(ConfigError):
    """The OS keyring cannot hold the token; a session-only sign-in still can."""


# keyrings.alt's file backends keep secrets in a file in the home directory (plain or with a
# password the user has to type): not what "in the OS keyring" promises, so they are refused.
_FILE_BACKENDS = ("keyrings.alt.file",)


def _why_unusable(backend: KeyringBackend) -> str | None:
    if type(backend).__module__.startswith(_FILE_BACKENDS):
        return (f"the keyring backend {type(backend).__name__} stores secrets in a file; "
                "enable the system keyring (Secret Service, macOS Keychain or Windows Credential Locker)")
    # keyring's own answer when it found nothing usable (its fail/null backends, priority 0 or below).
    if type(backend).__module__ in ("keyring.backends.fail", "keyring.backends.null"):
        return ("no system keyring is available (no Secret Service such as GNOME Keyring or KWallet "
                "is running in this session)")
    return None


class CredentialStore:
    def __init__(self, backend: KeyringBackend | None = None, *, service: str = SERVICE) -> None:
        self._backend = backend if backend is not None else keyring.get_keyring()
        self._service = service
        # Checked on use, not here: the app must still open (and say why) on such a machine.
        self.problem: str | None = _why_unusable(self._backend)
        self._memory: dict[str, str] | None = None

    @property
    def session_only(self) -> bool:
        return self._memory is not None

    def use_session_only(self) -> None:
        """Keep tokens in memory from now on (the user chose it after being told there is no keyring)."""
        if self._memory is None:
            self._memory = {}

    def _usable(self) -> KeyringBackend:
        if self.problem is not None:
            raise KeyringUnavailableError(f"cannot store the token: {self.problem}")
        return self._backend

    def save(self, url: str, token: str) -> None:
        if self._memory is not None:
            self._memory[url] = token
            return
        try:
            self._usable().set_password(self._service, url, token)
        except KeyringError as exc:
            raise KeyringUnavailableError(f"cannot store the token in the system keyring: {exc}") from None

    def load(self, url: str) -> str | None:
        if self._memory is not None:
            return self._memory.get(url)
        if self.problem is not None:
            return None  # nothing can have been stored: the user is asked to sign in, not shown an error
        try:
            return self._usable().get_password(self._service, url)
        except KeyringError as exc:
            raise KeyringUnavailableError(f"cannot read the system keyring: {exc}") from None

    def delete(self, url: str) -> None:
        if self._memory is not None:
            self._memory.pop(url, None)
            return
        if self.problem is not None:
            return
        try:
            self._usable().delete_password(self._service, url)
        except PasswordDeleteError:
            return  # nothing stored: signing out twice is fine
        except KeyringError as exc:
            raise ConfigError(f"cannot remove the token from the system keyring: {exc}") from None
