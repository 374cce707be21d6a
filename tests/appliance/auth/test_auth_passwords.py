"""Passwords: Argon2id parameters, length and blocklist rules, verification."""

from __future__ import annotations

import unicodedata
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.auth import passwords
from appliance.auth.passwords import (
    Argon2Params,
    check_password,
    hash_password,
    is_blocklisted,
    needs_rehash,
    verify_dummy,
    verify_password,
)
from shared.errors import InputError

GOOD = "violet-harbour-tangent-57"


def test_hash_is_argon2id_with_encoded_parameters_and_verifies() -> None:
    encoded = hash_password(GOOD)
    algo, version, params, _salt, _digest = encoded.split("$")[1:]
    assert (algo, version) == ("argon2id", "v=19")
    fields = dict(kv.split("=") for kv in params.split(","))
    assert int(fields["m"]) >= 19 * 1024 and int(fields["t"]) >= 2 and int(fields["p"]) >= 1
    assert GOOD not in encoded
    assert verify_password(GOOD, encoded)
    assert not verify_password(GOOD + "x", encoded)
    assert hash_password(GOOD) != encoded  # fresh salt every time


def test_stronger_parameters_travel_with_the_hash() -> None:
    stronger = Argon2Params(memory_kib=20 * 1024, iterations=3, lanes=1)
    encoded = hash_password(GOOD, params=stronger)
    assert "m=20480,t=3,p=1" in encoded
    assert verify_password(GOOD, encoded)
    assert not needs_rehash(encoded)
    assert needs_rehash(hash_password(GOOD), params=stronger)


def test_weak_or_malformed_hashes_never_verify() -> None:
    weak = hash_password(GOOD).replace("m=19456,t=2", "m=8,t=1")
    for encoded in (weak, "", "$argon2i$v=19$m=19456,t=2,p=1$AAAA$AAAA", "plain text", GOOD):
        assert not verify_password(GOOD, encoded)
        assert needs_rehash(encoded)


def test_unknown_user_costs_a_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = passwords._derive
    encoded = hash_password(GOOD)

    def counting(*args: object, **kwargs: object) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    passwords._dummy_hash()  # made once, lazily; not part of the comparison
    monkeypatch.setattr(passwords, "_derive", counting)
    assert verify_dummy(GOOD) is False
    dummy_calls = len(calls)
    verify_password("wrong-password-123456", encoded)
    assert dummy_calls == 1 and len(calls) == 2


@pytest.mark.parametrize("length", [15, 64, 128])
def test_length_bounds_accept(length: int) -> None:
    check_password(("sturdy-lantern-" * 10)[:length - 1] + "Q")


@pytest.mark.parametrize("password", ["shorty-but-ok", "x" * 14, "z7#" * 43])
def test_length_bounds_refuse(password: str) -> None:
    with pytest.raises(InputError, match=r"too (short|long)"):
        check_password(password)


@pytest.mark.parametrize(
    "password",
    [
        "passwordpassword",
        "password12345678",
        "123456789012345",
        "qwertyuiopasdfgh",
        "correcthorsebatterystaple",
        "correct horse battery staple",
        "aaaaaaaaaaaaaaaa",
        "iloveyou!!!!!!!!",
        "1q2w3e4r5t6y7u8i",
        "enclave-2026-!!!",
    ],
)
def test_blocklist_refuses_the_usual_suspects(password: str) -> None:
    with pytest.raises(InputError) as info:
        check_password(password)
    assert password not in str(info.value)


def test_username_padded_is_refused_but_no_composition_rules() -> None:
    assert is_blocklisted("zebulonia.2026!!!", username="zebulonia")
    assert not is_blocklisted("zebulonia.2026!!!", username="bob")
    # Lowercase only, no digits, no symbols: fine when long and uncommon.
    check_password("walnut orbit glacier kettle")


def test_shipped_blocklist_is_real_and_small() -> None:
    data = resources.files("appliance.auth").joinpath("common-passwords.txt").read_bytes()
    assert len(data) < 500_000
    words = set(data.decode().split())
    assert {"password", "123456", "qwerty", "iloveyou", "letmein", "dragon", "monkey"} <= words
    assert len(words) > 10_000
    assert is_blocklisted("password") and is_blocklisted("QWERTY")


@settings(max_examples=12, deadline=None)
@given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=60))
def test_any_text_round_trips_and_others_do_not_verify(password: str, other: str) -> None:
    encoded = hash_password(password)
    assert verify_password(password, encoded)
    same = unicodedata.normalize("NFKC", other) == unicodedata.normalize("NFKC", password)
    assert verify_password(other, encoded) == same


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_policy_check_is_total(password: str) -> None:
    """Any input gets a verdict: accepted, or an InputError that never echoes the password."""
    try:
        check_password(password)
    except InputError as exc:
        assert len(password) < 4 or password not in str(exc)
