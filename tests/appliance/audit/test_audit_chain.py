"""The record encoding: the fast path equals the specified one, and the spec is what it says."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.audit.chain import (
    GENESIS_HASH,
    canonical_json,
    check_json_value,
    record_hash,
    record_hash_fast,
)
from shared.errors import InputError

text = st.text(max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
records = st.fixed_dictionaries(
    {
        "seq": st.integers(1, 2**62),
        "time": st.just("2026-11-28T12:00:00.000001Z"),
        "actor": text,
        "action": text,
        "target": text,
        "outcome": text,
        "request_id": text,
        "client_address": text,
        "details": st.dictionaries(text, json_values, max_size=5),
        "content": st.none() | st.dictionaries(text, text, max_size=3),
        "prev_hash": st.sampled_from([GENESIS_HASH, "ab" * 32]),
    }
)


@settings(max_examples=150, deadline=None)
@given(records)
def test_fast_hash_equals_reference(record: dict[str, Any]) -> None:
    fast = record_hash_fast(
        record["seq"],
        record["time"],
        record["actor"],
        record["action"],
        record["target"],
        record["outcome"],
        record["request_id"],
        record["client_address"],
        canonical_json(record["details"]),
        None if record["content"] is None else canonical_json(record["content"]),
        record["prev_hash"],
    )
    assert fast == record_hash(record)


def test_hash_is_domain_separated_sha256_of_sorted_compact_json() -> None:
    record = {
        "seq": 1,
        "time": "2026-11-28T12:00:00.000000Z",
        "actor": "ålice",
        "action": "auth.login.ok",
        "target": "",
        "outcome": "success",
        "request_id": "r1",
        "client_address": "10.0.0.1",
        "details": {"b": 1, "a": [True, None]},
        "content": None,
        "prev_hash": GENESIS_HASH,
    }
    # Written out by hand from the docstring of appliance.audit.chain, as a third party would.
    body = (
        '{"action":"auth.login.ok","actor":"ålice","client_address":"10.0.0.1","content":null,'
        '"details":{"a":[true,null],"b":1},"outcome":"success","prev_hash":"' + GENESIS_HASH + '",'
        '"request_id":"r1","seq":1,"target":"","time":"2026-11-28T12:00:00.000000Z"}'
    )
    expected = hashlib.sha256(b"enclave.audit.record.v1\x00" + body.encode("utf-8")).hexdigest()
    assert record_hash(record) == expected
    assert json.loads(body) == record
    # Without the prefix the hash differs: record hashes cannot collide with other hashed data.
    assert hashlib.sha256(body.encode("utf-8")).hexdigest() != expected


@pytest.mark.parametrize("bad", [1.5, {"x": float("nan")}, [1, {"y": 0.1}], {1: "int key"}, b"bytes", {1, 2}])
def test_values_outside_the_canonical_subset_are_refused(bad: object) -> None:
    with pytest.raises(InputError):
        check_json_value({"v": bad})
