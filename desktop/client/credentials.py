"""Session and API tokens in the operating system's keyring, never in a file of ours.

One secret per appliance URL under the service name ``enclave-desktop``. The keyring backend is
passed in (tests give an in-memory one; the app uses whatever ``keyring`` selects for the OS).
"""

from __future__ import annotations

import keyring
from keyring.backend import KeyringBackend
from keyring.errors import KeyringError, PasswordDeleteError

from shared.errors import ConfigError

__all__ = ["SERVICE", "CredentialStore"]

SERVICE = "enclave-desktop"


# keyrings.alt's file backends keep secrets in a file in the home directory (plain or with a
# password the user has to type): not what "in the OS keyring" promises, so they are refused.
_FILE_BACKENDS = ("keyrings.alt.file",)


class CredentialStore:
    def __init__(self, backend: KeyringBackend | None = None, *, service: str = SERVICE) -> None:
        self._backend = backend if backend is not None else keyring.get_keyring()
        self._service = service
        # Checked on use, not here: the app must still open (and say why) on such a machine.
        self._refusal: str | None = None
        if type(self._backend).__module__.startswith(_FILE_BACKENDS):
            self._refusal = (
                f"the keyring backend {type(self._backend).__name__} stores secrets in a file; "
                "enable the system keyring (Secret Service, macOS Keychain or Windows Credential Locker)"
            )

    def _usable(self) -> KeyringBackend:
        if self._refusal is not None:
            raise ConfigError(self._refusal)
        return self._backend

    def save(self, url: str, token: str) -> None:
        try:
            self._usable().set_password(self._service, url, token)
        except KeyringError as exc:
            raise ConfigError(f"cannot store the token in the system keyring: {exc}") from None

    def load(self, url: str) -> str | None:
        try:
            return self._usable().get_password(self._service, url)
        except KeyringError as exc:
            raise ConfigError(f"cannot read the system keyring: {exc}") from None

    def delete(self, url: str) -> None:
        try:
            self._usable().delete_password(self._service, url)
        except PasswordDeleteError:
            return  # nothing stored: signing out twice is fine
        except KeyringError as exc:
            raise ConfigError(f"cannot remove the token from the system keyring: {exc}") from None
