"""Content capture per policy: ``none``, ``digest`` or ``sealed``.

``digest``: for each content field (``prompt``, ``completion``, ...), HMAC-SHA256 under the audit
HMAC key of ``b"enclave.audit.digest.v1\\x00" + field + b"\\x00" + redacted text``. The record's
content reference is ``{"mode": "digest", "key_id": ..., "hmac": {field: hex}}``; an auditor tests
a candidate text with :func:`digest_matches` (the candidate is redacted the same way first).

``sealed``: the redacted fields, as canonical JSON, are encrypted with AES-256-GCM under a fresh
per-record data key; the data key is itself encrypted (AES-256-GCM) under the master key. The
record's content reference is ``{"mode": "sealed", "ref": uuid, "fields": [...], "sha256":
hex of the ciphertext}`` — the chain covers the ciphertext, never a key, so destroying the wrapped
data key (crypto-shredding) makes the content unreadable while every record still verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.audit.chain import canonical_json
from appliance.audit.keys import AuditKeys
from appliance.audit.redact import redact
from shared.errors import ConfigError, InputError, IntegrityError, NotFoundError

__all__ = [
    "CAPTURE_MODES",
    "CaptureMode",
    "SealedBlob",
    "digest_content",
    "digest_matches",
    "open_sealed",
    "seal_content",
]

CaptureMode = Literal["none", "digest", "sealed"]
CAPTURE_MODES: tuple[CaptureMode, ...] = ("none", "digest", "sealed")

_DIGEST_PREFIX = b"enclave.audit.digest.v1\x00"
_WRAP_AAD = b"enclave.audit.wrap.v1\x00"
_SEAL_AAD = b"enclave.audit.seal.v1\x00"


@dataclass(frozen=True)
class SealedBlob:
    ref: str
    master_key_id: str
    wrapped_key: bytes
    ciphertext: bytes


def _check_fields(content: Mapping[str, str]) -> None:
    for name, text in content.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise InputError("audit content must map field names to strings")


def _hmac_key(keys: AuditKeys) -> bytes:
    if keys.hmac_key is None:
        raise ConfigError("no audit HMAC key loaded: cannot digest content")
    return keys.hmac_key


def _digest(key: bytes, field: str, text: str) -> str:
    message = _DIGEST_PREFIX + field.encode("utf-8") + b"\x00" + redact(text).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def digest_content(keys: AuditKeys, content: Mapping[str, str]) -> dict[str, Any]:
    _check_fields(content)
    key = _hmac_key(keys)
    return {
        "mode": "digest",
        "key_id": hashlib.sha256(b"enclave.audit.hmac-key-id\x00" + key).hexdigest(),
        "hmac": {name: _digest(key, name, text) for name, text in content.items()},
    }


def digest_matches(keys: AuditKeys, content_ref: Mapping[str, Any], field: str, candidate: str) -> bool:
    """Whether ``candidate`` is the text that was digested as ``field``."""
    if content_ref.get("mode") != "digest":
        raise InputError("this record's content was not captured as a digest")
    stored = content_ref.get("hmac", {}).get(field)
    if not isinstance(stored, str):
        raise NotFoundError(f"no digest of field {field!r} in this record")
    return hmac.compare_digest(stored, _digest(_hmac_key(keys), field, candidate))


def seal_content(keys: AuditKeys, content: Mapping[str, str]) -> tuple[dict[str, Any], SealedBlob]:
    _check_fields(content)
    if keys.master_key is None:
        raise ConfigError("no audit master key loaded: cannot seal content")
    ref = str(uuid.uuid4())
    data_key = AESGCM.generate_key(bit_length=256)
    nonce, wrap_nonce = secrets.token_bytes(12), secrets.token_bytes(12)
    plaintext = canonical_json({name: redact(text) for name, text in content.items()}).encode("utf-8")
    ciphertext = nonce + AESGCM(data_key).encrypt(nonce, plaintext, _SEAL_AAD + ref.encode())
    wrapped = wrap_nonce + AESGCM(keys.master_key).encrypt(wrap_nonce, data_key, _WRAP_AAD + ref.encode())
    reference = {
        "mode": "sealed",
        "ref": ref,
        "fields": sorted(content),
        "sha256": hashlib.sha256(ciphertext).hexdigest(),
    }
    return reference, SealedBlob(ref, keys.master_key_id, wrapped, ciphertext)


def open_sealed(keys: AuditKeys, ref: str, wrapped_key: bytes | None, ciphertext: bytes) -> dict[str, str]:
    """Decrypt sealed content; NotFoundError once purged, IntegrityError if anything was altered."""
    if wrapped_key is None:
        raise NotFoundError(f"sealed content {ref} was purged (its key was destroyed)")
    if keys.master_key is None:
        raise ConfigError("no audit master key loaded: cannot open sealed content")
    try:
        data_key = AESGCM(keys.master_key).decrypt(
            wrapped_key[:12], wrapped_key[12:], _WRAP_AAD + ref.encode()
        )
        plaintext = AESGCM(data_key).decrypt(ciphertext[:12], ciphertext[12:], _SEAL_AAD + ref.encode())
    except (InvalidTag, ValueError):
        raise IntegrityError(
            f"sealed content {ref} does not decrypt: altered, or another master key"
        ) from None
    value = json.loads(plaintext)
    return {str(k): str(v) for k, v in value.items()}
