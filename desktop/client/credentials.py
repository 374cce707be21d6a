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


class CredentialStore:
    def __init__(self, backend: KeyringBackend | None = None, *, service: str = SERVICE) -> None:
        self._backend = backend if backend is not None else keyring.get_keyring()
        self._service = service

    def save(self, url: str, token: str) -> None:
        try:
            self._backend.set_password(self._service, url, token)
        except KeyringError as exc:
            raise ConfigError(f"cannot store the token in the system keyring: {exc}") from None

    def load(self, url: str) -> str | None:
        try:
            return self._backend.get_password(self._service, url)
        except KeyringError as exc:
            raise ConfigError(f"cannot read the system keyring: {exc}") from None

    def delete(self, url: str) -> None:
        try:
            self._backend.delete_password(self._service, url)
        except PasswordDeleteError:
            return  # nothing stored: signing out twice is fine
        except KeyringError as exc:
            raise ConfigError(f"cannot remove the token from the system keyring: {exc}") from None
