"""Raw bearer secrets and the only form in which they are stored: a SHA-256 digest.

A raw token is ``TOKEN_PREFIX`` + 43 base64url characters (256 random bits), so secret scanners
and the audit redactor can recognise it. It is shown once; the database keeps
``sha256(raw)`` in hex, which is enough to look it up and useless to replay. The secret has
full entropy, so a plain (unsalted, fast) digest is the right tool here, unlike for passwords.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from shared.version import TOKEN_PREFIX

__all__ = ["TOKEN_PATTERN", "looks_like_token", "new_secret", "token_digest"]

_SECRET_BYTES = 32
TOKEN_PATTERN = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}")


def new_secret() -> str:
    """A fresh bearer token: the fixed prefix and 256 bits from the OS CSPRNG."""
    return TOKEN_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def looks_like_token(raw: str) -> bool:
    return TOKEN_PATTERN.fullmatch(raw) is not None


def token_digest(raw: str) -> str:
    """The stored form of a bearer token."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()
