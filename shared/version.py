"""Version and protocol constants both sides agree on."""

from __future__ import annotations

__all__ = ["API_PREFIX", "TOKEN_PREFIX", "VERSION"]

VERSION = "0.1.0"
API_PREFIX = "/v1"
# Fixed prefix of every Enclave API token, so secret scanners (and our own redactor) can find them.
TOKEN_PREFIX = "encl_"
