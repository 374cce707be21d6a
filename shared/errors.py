"""The one exception tree for Enclave.

    EnclaveError                      anything Enclave raises on purpose; str() is a one-line reason
    ├── ConfigError                   bad settings file, environment variable or data directory
    ├── InputError                    bad user input (CLI argument, request field, file contents)
    │   ├── NotFoundError             a named thing does not exist
    │   └── ConflictError             a named thing already exists / state forbids the change
    ├── AuthError                     authentication failed (bad password, bad/expired/revoked token)
    │   └── ThrottledError            too many attempts; carries retry_after seconds
    ├── PermissionDeniedError         authenticated, but the role lacks the permission
    ├── QuotaError                    a policy limit was hit; carries retry_after seconds (or None)
    ├── DatabaseError                 the database is unreachable, newer than the code, or not ours
    ├── AuditUnavailableError         the audit store cannot commit: callers must fail closed
    ├── IntegrityError                a signature, manifest, digest or chain does not verify
    ├── ModelError                    a checkpoint, bundle or graph is unusable (names the tensor/key)
    ├── EngineError                   the generation engine cannot serve a request
    └── UpstreamError                 a site service we depend on (the LDAP directory) cannot be used

The CLI prints ``enclave: error: <str(exc)>`` and exits non-zero for any of these; the API maps
them to OpenAI-style error envelopes (see ``shared.api_errors``). Nothing else should be caught
broadly: an exception outside this tree is a bug and deserves its traceback.
"""

from __future__ import annotations

__all__ = [
    "AuditUnavailableError",
    "AuthError",
    "ConfigError",
    "ConflictError",
    "DatabaseError",
    "EnclaveError",
    "EngineError",
    "InputError",
    "IntegrityError",
    "ModelError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaError",
    "ThrottledError",
    "UpstreamError",
]


class EnclaveError(Exception):
    """Root of every error Enclave raises on purpose. ``str(exc)`` is a one-line reason."""


class ConfigError(EnclaveError):
    pass


class InputError(EnclaveError):
    pass


class NotFoundError(InputError):
    pass


class ConflictError(InputError):
    pass


class AuthError(EnclaveError):
    """``reason`` is one word for the audit log: bad_password, unknown_user, disabled, expired, ..."""

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class ThrottledError(AuthError):
    def __init__(self, message: str, *, retry_after: float, reason: str = "throttled") -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class PermissionDeniedError(EnclaveError):
    pass


class QuotaError(EnclaveError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseError(EnclaveError):
    pass


class AuditUnavailableError(EnclaveError):
    pass


class IntegrityError(EnclaveError):
    pass


class ModelError(EnclaveError):
    pass


class EngineError(EnclaveError):
    pass


class UpstreamError(EnclaveError):
    pass
