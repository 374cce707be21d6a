"""Secret redaction: applied to every string before it is digested, sealed or logged.

Each finding is replaced by ``[REDACTED:<kind>]``; for ``name = value`` assignments only the value
goes, so the record still says *which* setting held a secret. Redaction is idempotent (redacting
redacted text changes nothing), which lets an auditor's candidate text be redacted the same way
before it is compared with a digest.

Recognised: AWS access key ids, GCP API keys and OAuth tokens, Azure storage keys / SAS signatures /
client secrets, PEM and PGP private key blocks (also when cut off before their END line), JWTs,
GitHub, GitLab and Slack tokens and Slack webhooks, Enclave's own API tokens
(``shared.version.TOKEN_PREFIX``), the prefixed keys of Stripe, OpenAI, Anthropic, npm, PyPI, Hugging
Face, SendGrid, Shopify, DigitalOcean, Databricks, Vault, Grafana, Postman, Linear, New Relic,
Sentry, Square, Twilio, Mailgun, Telegram, age, Doppler and Pulumi (shapes as gitleaks describes
them), ``Bearer`` credentials, passwords inside URLs (``scheme://user:[REDACTED]@host``), and assignments to secret-looking names (password, secret,
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
    # From here, shapes as gitleaks' rules describe them (tested against a corpus of samples).
    ("stripe-key", re.compile(r"(?:sk|rk)_(?:live|test|prod)_[A-Za-z0-9]{10,99}")),
    ("anthropic-key", re.compile(r"sk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{32,}")),
    (
        "openai-key",
        re.compile(
            r"sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{20,}|sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"
        ),
    ),
    ("npm-token", re.compile(r"npm_[A-Za-z0-9]{36}")),
    ("pypi-token", re.compile(r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}")),
    ("huggingface-token", re.compile(r"hf_[A-Za-z0-9]{34}")),
    ("sendgrid-key", re.compile(r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}")),
    ("shopify-token", re.compile(r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}")),
    ("digitalocean-token", re.compile(r"do[opr]_v1_[a-f0-9]{64}")),
    ("databricks-token", re.compile(r"dapi[a-f0-9]{32}(?:-\d)?")),
    ("vault-token", re.compile(r"hv[sb]\.[A-Za-z0-9_-]{24,}")),
    ("grafana-token", re.compile(r"glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|glc_[A-Za-z0-9+/]{32,}={0,2}")),
    ("postman-key", re.compile(r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}")),
    ("linear-key", re.compile(r"lin_api_[A-Za-z0-9]{40}")),
    ("newrelic-key", re.compile(r"NRAK-[A-Z0-9]{27}")),
    ("sentry-token", re.compile(r"sntry[su]_[A-Za-z0-9+/=_]{40,}")),
    ("square-token", re.compile(r"sq0(?:atp|csp)-[A-Za-z0-9_-]{22,43}|EAAA[A-Za-z0-9_-]{60}")),
    ("twilio-key", re.compile(r"\bSK[0-9a-f]{32}\b")),
    ("mailgun-key", re.compile(r"\bkey-[0-9a-f]{32}\b")),
    ("telegram-bot-token", re.compile(r"\b\d{8,10}:AA[A-Za-z0-9_-]{33}")),
    ("age-secret-key", re.compile(r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}")),
    ("doppler-token", re.compile(r"dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}")),
    ("pulumi-token", re.compile(r"pul-[a-f0-9]{40}")),
    ("bearer-token", re.compile(r"(?<=Bearer )[A-Za-z0-9._~+/-]{20,}=*")),
)
# user:password@ in a URL: the password goes, the user and host stay.
_URL_CREDENTIAL = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]{0,256}:)(?P<password>[^/\s@]{1,256})(?=@)"
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
_SCREEN = re.compile(
    "|".join(f"(?:{p.pattern})" for _, p in _PATTERNS)
    + "|"
    + _URL_CREDENTIAL.pattern
    + "|"
    + _ASSIGNMENT.pattern
)
# ...but _SCREEN starts several alternatives with a broad character class, so it tries them at
# every position (about 1 us per character). Every pattern contains one of these literals, and an
# assignment needs ':' or '=' and a secret-looking word: checking those first rules out the usual
# clean string far faster, and is only ever a necessary condition (tested against _SCREEN).
_LITERALS = re.compile(
    r"PRIVATE KEY|eyJ|AKIA|ASIA|ABIA|ACCA|AROA|AIDA|AIza|ya29\.|ccount[Kk]ey=|ccess[Kk]ey=|sig="
    r"|Q~|gh[pousr]_|github_pat_|gl(?:pat|dt|rt|ptt|cbt|imt|oas|ft|soat|agent)-|xox[abposr]-"
    r"|hooks\.slack\.com/|_live_|_test_|_prod_|sk-|npm_|pypi-|hf_|SG\.|shp|_v1_|dapi|hv[sb]\.|glsa_|glc_|PMAK-"
    r"|lin_api_|NRAK-|sntry|sq0|EAAA|SK|key-|:AA|AGE-SECRET|dp\.|pul-|Bearer |://|" + re.escape(TOKEN_PREFIX)
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
    text = _URL_CREDENTIAL.sub(_url_password, text)
    return _ASSIGNMENT.sub(_assignment, text)


def _url_password(match: re.Match[str]) -> str:
    if match.group("password").startswith("[REDACTED:"):
        return match.group(0)
    return f"{match.group('head')}[REDACTED:url-password]"


def redact_value(value: Any) -> Any:
    """Redact every string inside a JSON-like value (dict keys included)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(k)): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value
