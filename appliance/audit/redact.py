"""Secret redaction: applied to every string before it is digested, sealed or logged.

Each finding is replaced by ``[REDACTED:<kind>]``; for ``name = value`` assignments only the value
goes, so the record still says *which* setting held a secret. Redaction is idempotent (redacting
redacted text changes nothing), which lets an auditor's candidate text be redacted the same way
before it is compared with a digest.

Recognised: AWS access key ids, GCP API keys and OAuth tokens, Azure storage keys / SAS signatures /
client secrets, PEM and PGP private key blocks (also when cut off before their END line), JWTs,
GitHub, GitLab and Slack tokens and Slack webhooks, Enclave's own API tokens
(``shared.version.TOKEN_PREFIX``), and assignments to secret-looking names (password, secret,
token, api_key, ...) whose value has high Shannon entropy.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from shared.version import TOKEN_PREFIX

__all__ = ["redact", "redact_value", "shannon_entropy"]

# Order matters: whole blocks first, so a token inside a key block is not reported twice.
# Prefixed tokens match without word boundaries: glued to other text they are still secrets.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private-key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[\s\S]*\Z)",
        ),
    ),
    ("jwt", re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")),
    ("aws-access-key", re.compile(r"(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA)[0-9A-Z]{16}")),
    ("gcp-api-key", re.compile(r"AIza[0-9A-Za-z_-]{35}")),
    ("gcp-oauth-token", re.compile(r"ya29\.[0-9A-Za-z_-]{20,}")),
    ("azure-storage-key", re.compile(r"(?<=[Aa]ccount[Kk]ey=)[A-Za-z0-9+/]{86}==")),
    ("azure-sas", re.compile(r"(?<=[Ss]hared[Aa]ccess[Kk]ey=)[^;\s\"']{16,}")),
    ("azure-sas", re.compile(r"(?<=[?&]sig=)[A-Za-z0-9%+/=]{20,}")),
    ("azure-client-secret", re.compile(r"\b[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}")),
    ("github-token", re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})")),
    (
        "gitlab-token",
        re.compile(r"gl(?:pat|dt|rt|ptt|cbt|imt|oas|ft|soat|agent)-[A-Za-z0-9_-]{20,}"),
    ),
    ("slack-token", re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}")),
    ("slack-webhook", re.compile(r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]{20,}")),
    ("enclave-token", re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_.-]{16,}")),
)

_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:passw(?:or)?d|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|client[_-]?secret|credentials?|auth[_-]?key|signing[_-]?key)[A-Za-z0-9_.-]*"
)
_ASSIGNMENT = re.compile(
    r"(?i:(?P<name>\b" + _SECRET_NAME + r"[\"']?\s*(?::=|=>|[:=])\s*)"
    r"(?:(?P<q>[\"'`])(?P<quoted>[^\"'`\r\n]{8,})(?P=q)|(?P<bare>[^\s\"'`,;(){}\[\]<>]{8,})))"
)
# One pass that finds whether anything at all needs redacting: nearly every string is clean, and
# this keeps redaction off the append path's profile.
_SCREEN = re.compile("|".join(f"(?:{p.pattern})" for _, p in _PATTERNS) + "|" + _ASSIGNMENT.pattern)
# ...but _SCREEN starts several alternatives with a broad character class, so it tries them at
# every position (about 1 us per character). Every pattern contains one of these literals, and an
# assignment needs ':' or '=' and a secret-looking word: checking those first rules out the usual
# clean string far faster, and is only ever a necessary condition (tested against _SCREEN).
_LITERALS = re.compile(
    r"PRIVATE KEY|eyJ|AKIA|ASIA|ABIA|ACCA|AROA|AIDA|AIza|ya29\.|ccount[Kk]ey=|ccess[Kk]ey=|sig="
    r"|Q~|gh[pousr]_|github_pat_|gl(?:pat|dt|rt|ptt|cbt|imt|oas|ft|soat|agent)-|xox[abposr]-"
    r"|hooks\.slack\.com/|" + re.escape(TOKEN_PREFIX)
)
_SECRET_WORD = re.compile(
    r"(?i:passw(?:or)?d|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|client[_-]?secret|credential|auth[_-]?key|signing[_-]?key)"
)
_SHORTEST_SECRET = 10
# Unquoted, a dotted name (`password = settings.db_password`) or a snake_case name
# (`token = fresh_token`) is code, not a secret; random secrets carry digits or mixed case.
_CODE_REFERENCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+|[a-z_]+|[A-Z_]+")
_ENTROPY_BITS = 3.0


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s character distribution."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _assignment(match: re.Match[str]) -> str:
    quoted = match.group("quoted")
    value = quoted if quoted is not None else match.group("bare")
    if value.startswith("[REDACTED:") or shannon_entropy(value) < _ENTROPY_BITS:
        return match.group(0)
    if quoted is None and _CODE_REFERENCE.fullmatch(value):
        return match.group(0)
    q = match.group("q") or ""
    return f"{match.group('name')}{q}[REDACTED:high-entropy]{q}"


def might_hold_secret(text: str) -> bool:
    """False only for text no pattern can match (a cheap first look before ``_SCREEN``)."""
    if _LITERALS.search(text) is not None:
        return True
    return ("=" in text or ":" in text) and _SECRET_WORD.search(text) is not None


# Strings already screened clean. Actors, actions, targets, addresses and detail keys repeat from
# event to event, so most screens are answered here. Only clean text is kept (never a secret), and
# the set is emptied when full rather than evicted one by one: cheap, and bounded.
_CLEAN: set[str] = set()
_CLEAN_MAX = 8192
_CLEAN_LONGEST = 256


def redact(text: str) -> str:
    """``text`` with every recognised secret replaced by ``[REDACTED:<kind>]``."""
    if len(text) < _SHORTEST_SECRET or text in _CLEAN:
        return text
    if not might_hold_secret(text) or not _SCREEN.search(text):
        if len(text) <= _CLEAN_LONGEST:
            if len(_CLEAN) >= _CLEAN_MAX:
                _CLEAN.clear()
            _CLEAN.add(text)
        return text
    for kind, pattern in _PATTERNS:
        text = pattern.sub(f"[REDACTED:{kind}]", text)
    return _ASSIGNMENT.sub(_assignment, text)


def redact_value(value: Any) -> Any:
    """Redact every string inside a JSON-like value (dict keys included)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(k)): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value
