"""Errors the client raises, placed in Enclave's one exception tree (:mod:`shared.errors`).

An HTTP error from the appliance becomes the tree's class for its status (401 -> ``AuthError``,
403 -> ``PermissionDeniedError``, ...) carrying the server's one-line message. Two conditions have
no server-side counterpart and get their own subclasses here:

    EnclaveError
    ├── UnreachableError (EnclaveError)        no TCP/TLS connection to the appliance at all
    ├── InputError
    │   └── ContextTooLongError                prompt + max_tokens exceed the model's context
    └── IntegrityError
        └── CertificateMismatchError           the server's certificate is not from the pinned CA
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Mapping

from shared.errors import (
    AuditUnavailableError,
    AuthError,
    ConflictError,
    EnclaveError,
    EngineError,
    InputError,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    QuotaError,
    ThrottledError,
    UpstreamError,
)

__all__ = [
    "CertificateMismatchError",
    "ContextTooLongError",
    "UnreachableError",
    "error_for_status",
    "response_error",
    "transport_error",
]

# OpenAI's wording, which the appliance keeps: "...maximum context length is 4096 tokens; the prompt has 7930 tokens..."
_CONTEXT_NUMBERS = re.compile(r"context length is (\d+) tokens.*?has (\d+) tokens")


class UnreachableError(EnclaveError):
    pass


class CertificateMismatchError(IntegrityError):
    pass


class ContextTooLongError(InputError):
    def __init__(self, message: str, *, limit: int | None, prompt_tokens: int | None) -> None:
        super().__init__(message)
        self.limit = limit
        self.prompt_tokens = prompt_tokens


def error_for_status(status: int, message: str, code: str | None, retry_after: float | None) -> EnclaveError:
    """The exception for an error response from the appliance."""
    if status == 401:
        return AuthError(message)
    if status == 403:
        return PermissionDeniedError(message)
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ConflictError(message)
    if status == 429:
        if code == "too_many_attempts":
            return ThrottledError(message, retry_after=retry_after or 0.0)
        return QuotaError(message, retry_after=retry_after)
    if status == 400 and code == "context_length_exceeded":
        m = _CONTEXT_NUMBERS.search(message)
        return ContextTooLongError(
            message, limit=int(m.group(1)) if m else None, prompt_tokens=int(m.group(2)) if m else None
        )
    if status in (400, 413, 422):
        return InputError(message)
    if status == 503 and code == "audit_unavailable":
        return AuditUnavailableError(message)
    if status == 503 and code == "directory_unavailable":
        return UpstreamError(message)
    if status == 503:
        return EngineError(message)
    return EnclaveError(f"the appliance answered {status}: {message}")


def response_error(status: int, reason: str, body: bytes, headers: Mapping[str, str]) -> EnclaveError:
    """The exception for an error response, with the server's message when its body has one."""
    message, code = reason or f"HTTP {status}", None
    try:
        parsed = json.loads(body)
        message = parsed["error"]["message"]
        code = parsed["error"].get("code")
    except (ValueError, KeyError, TypeError):
        pass
    retry = headers.get("Retry-After")
    return error_for_status(status, message, code, float(retry) if retry else None)


def _tls_failure(exc: BaseException) -> str | None:
    """The certificate check's reason when ``exc`` is one, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or "certificate verify failed")
        seen = seen.__cause__ or seen.__context__
    return "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else None


def transport_error(exc: BaseException, base_url: str, ca_fingerprint: str = "") -> EnclaveError:
    """The exception for a request that got no answer: a certificate the pinned CA did not issue
    (or made for another host name), or no connection at all."""
    reason = _tls_failure(exc)
    if reason is not None and "mismatch" in reason:
        # The right CA, the wrong name: the certificate was made for other host names.
        return CertificateMismatchError(
            f"{base_url}: {reason.rstrip('.')}; use the host name the appliance's certificate "
            "was issued for (or have the administrator add this one)"
        )
    if reason is not None:
        pinned = f" (pinned CA {ca_fingerprint})" if ca_fingerprint else ""
        return CertificateMismatchError(
            f"{base_url} presented a certificate not issued by the pinned CA{pinned}: "
            "it may be another server, or the appliance's CA was replaced"
        )
    return UnreachableError(f"cannot reach the appliance at {base_url}: {type(exc).__name__} {exc}".strip())
