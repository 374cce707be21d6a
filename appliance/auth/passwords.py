"""Passwords: Argon2id hashes in PHC form, a length rule and a blocklist — no composition rules.

Following NIST SP 800-63B: 15..128 characters (after NFKC normalisation), anything printable or
not, refused when it is a known common password, a repetition, a keyboard or alphabet run, or a
common password (or the username) padded with digits and punctuation. The blocklist ships as
package data (``common-passwords.txt``: Django's 20,000 most common passwords plus a few long
passphrases).

Hashes carry their own parameters (``$argon2id$v=19$m=19456,t=2,p=1$salt$hash``), so the cost
can be raised later: :func:`needs_rehash` says when a stored hash is below the current one, and
verification reads the parameters from the hash it checks. Verification compares digests with
:func:`hmac.compare_digest`; :func:`verify_dummy` spends the same time for a user who does not
exist, so response time does not reveal which usernames are real.
"""

from __future__ import annotations

import base64
import functools
import hmac
import os
import re
import threading
import unicodedata
from dataclasses import dataclass
from importlib import resources

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from shared.errors import InputError

__all__ = [
    "ARGON2_SLOTS",
    "MAX_LENGTH",
    "MIN_LENGTH",
    "PARAMS",
    "Argon2Params",
    "check_password",
    "hash_password",
    "is_blocklisted",
    "needs_rehash",
    "verify_dummy",
    "verify_password",
]

MIN_LENGTH = 15
MAX_LENGTH = 128


@dataclass(frozen=True, kw_only=True)
class Argon2Params:
    memory_kib: int
    iterations: int
    lanes: int
    salt_bytes: int = 16
    hash_bytes: int = 32


# OWASP's first recommended Argon2id configuration: 19 MiB, 2 iterations, 1 lane.
PARAMS = Argon2Params(memory_kib=19 * 1024, iterations=2, lanes=1)
# Never verify against parameters weaker than this, whatever a stored hash claims.
_FLOOR = Argon2Params(memory_kib=19 * 1024, iterations=2, lanes=1)
# Refuse absurd parameters in a stored hash instead of allocating gigabytes for it.
_CEILING_MEMORY_KIB = 4 * 1024 * 1024

_RUNS = (
    "0123456789",
    "abcdefghijklmnopqrstuvwxyz",
    "qwertyuiopasdfghjklzxcvbnm",
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
)
# At most this many Argon2 computations run at once, process-wide (each needs 19 MiB and a core
# for ~50 ms): half the cores this process may use, so a 48-thread login spray queues here and
# leaves the other half to the engine (with every core, generation p99 under the spray was ~6x its
# unloaded value on 2 cores; bench/login_spray.py). The queue costs the sprayer, not generation.
ARGON2_SLOTS = max(1, len(os.sched_getaffinity(0)) // 2 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2) // 2)
_argon2_slots = threading.BoundedSemaphore(ARGON2_SLOTS)

_PADDING = "0123456789!@#$%^&*()-_=+[]{};:'\",.<>/?\\|`~ "


def _normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


@functools.cache
def _blocklist() -> frozenset[str]:
    text = resources.files("appliance.auth").joinpath("common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("## ")
    )


def _is_run(lowered: str) -> bool:
    for run in _RUNS:
        cycle = run * (len(lowered) // len(run) + 2)
        if lowered in cycle or lowered in cycle[::-1]:
            return True
    return False


def is_blocklisted(password: str, *, username: str | None = None) -> bool:
    """True when ``password`` is common, repetitive, a run, or a common word/username padded."""
    # Spaces do not make a common phrase less common: "correct horse battery staple".
    lowered = re.sub(r"\s+", "", _normalise(password).lower())
    common = _blocklist()
    if lowered in common or _is_run(lowered):
        return True
    if re.fullmatch(r"(.+?)\1+", lowered, flags=re.DOTALL):
        return True
    core = lowered.strip(_PADDING)
    if not core or core in common or _is_run(core) or core == "enclave":
        return True
    if re.fullmatch(r"(.+?)\1+", core, flags=re.DOTALL):
        return True
    return username is not None and username != "" and core == username.lower()


def check_password(password: str, *, username: str | None = None) -> None:
    """Raise InputError (one line, never echoing the password) unless ``password`` is acceptable."""
    length = len(_normalise(password))
    if length < MIN_LENGTH:
        raise InputError(f"password too short: {length} characters, at least {MIN_LENGTH} needed")
    if length > MAX_LENGTH:
        raise InputError(f"password too long: {length} characters, at most {MAX_LENGTH} allowed")
    if is_blocklisted(password, username=username):
        raise InputError("password is too common or predictable (it is on the blocklist); choose another")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _derive(password: str, salt: bytes, params: Argon2Params, length: int) -> bytes:
    kdf = Argon2id(
        salt=salt,
        length=length,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    secret = _normalise(password).encode("utf-8")
    with _argon2_slots:
        return kdf.derive(secret)


def hash_password(password: str, *, params: Argon2Params = PARAMS) -> str:
    """The PHC string for ``password`` under ``params`` with a fresh random salt."""
    salt = os.urandom(params.salt_bytes)
    digest = _derive(password, salt, params, params.hash_bytes)
    return (
        f"$argon2id$v=19$m={params.memory_kib},t={params.iterations},p={params.lanes}"
        f"${_b64(salt)}${_b64(digest)}"
    )


def _parse(encoded: str) -> tuple[Argon2Params, bytes, bytes] | None:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] or parts[1] != "argon2id" or parts[2] != "v=19":
        return None
    try:
        fields = dict(item.split("=", 1) for item in parts[3].split(","))
        params = Argon2Params(
            memory_kib=int(fields["m"]), iterations=int(fields["t"]), lanes=int(fields["p"])
        )
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except (KeyError, ValueError):
        return None
    if (
        params.memory_kib < _FLOOR.memory_kib
        or params.iterations < _FLOOR.iterations
        or params.lanes < 1
        or params.memory_kib > _CEILING_MEMORY_KIB
        or len(salt) < 8
        or len(digest) < 16
    ):
        return None
    return params, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches the PHC string ``encoded``; False for a malformed hash."""
    parsed = _parse(encoded)
    if parsed is None:
        return False
    params, salt, expected = parsed
    # Cap the work for a huge input, but still do it: rejecting it early would be faster.
    too_long = len(password) > 4 * MAX_LENGTH
    candidate = _derive(password[: 4 * MAX_LENGTH], salt, params, len(expected))
    return hmac.compare_digest(candidate, expected) and not too_long


@functools.cache
def _dummy_hash() -> str:
    return hash_password(base64.b64encode(os.urandom(24)).decode())


def verify_dummy(password: str) -> bool:
    """Spend one verification's time for a user who does not exist (always False)."""
    verify_password(password, _dummy_hash())
    return False


def needs_rehash(encoded: str, *, params: Argon2Params = PARAMS) -> bool:
    """True when ``encoded`` was made with weaker parameters than ``params`` (or is unreadable)."""
    parsed = _parse(encoded)
    if parsed is None:
        return True
    have = parsed[0]
    return (
        have.memory_kib < params.memory_kib or have.iterations < params.iterations or have.lanes < params.lanes
    )
