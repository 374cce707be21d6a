"""Grammar-constrained decoding: random logits still produce JSON that parses and validates."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from appliance.engine import LLMEngine, SamplingParams
from appliance.engine.constrain import Constraint, GrammarTokenizer, apply_masks
from appliance.engine.tokenizer import Tokenizer
from shared.errors import InputError
from tests.helpers.engine_demo import Demo, build_demo_model
from tests.helpers.engine_fake_runner import FakeRunner
from tests.helpers.engine_tokenizer import build_tokenizer

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    },
    "required": ["name", "count", "tags"],
}


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return build_tokenizer()


def run_all(engine: LLMEngine, requests: dict[str, SamplingParams], prompt: list[int]) -> dict[str, str]:
    for rid, params in requests.items():
        engine.add_request(rid, prompt, params)
    text = dict.fromkeys(requests, "")
    reasons: dict[str, str | None] = {}
    while engine.has_work:
        for out in engine.step():
            text[out.request_id] += out.delta.text
            reasons[out.request_id] = out.delta.finish_reason
    assert all(reasons[r] == "stop" for r in requests if requests[r].constraint is not None), reasons
    return text


def test_constrained_rows_validate_while_unconstrained_rows_in_the_batch_run_free(tok: Tokenizer) -> None:
    engine = LLMEngine(FakeRunner(vocab_size=tok.vocab_size, num_slots=4, max_context=512), tok)
    schema = Constraint.json_schema(SCHEMA)
    params = {
        **{
            f"s{i}": SamplingParams(temperature=1.0, seed=i, max_tokens=300, constraint=schema)
            for i in range(3)
        },
        "obj": SamplingParams(temperature=1.0, seed=0, max_tokens=300, constraint=Constraint.json_object()),
        "free": SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True),
    }
    text = run_all(engine, params, [5, 6, 7])
    for i in range(3):
        jsonschema.validate(json.loads(text[f"s{i}"]), SCHEMA)
    assert isinstance(json.loads(text["obj"]), dict)
    # The free row is what it would be alone.
    alone = LLMEngine(FakeRunner(vocab_size=tok.vocab_size, num_slots=1, max_context=512), tok)
    assert run_all(alone, {"free": params["free"]}, [5, 6, 7])["free"] == text["free"]


def test_strict_forbids_unlisted_properties_and_eos_waits_for_the_grammar(tok: Tokenizer) -> None:
    grammar = GrammarTokenizer(tok)
    strict = grammar.matcher(
        Constraint.json_schema({"type": "object", "properties": {"a": {"type": "integer"}}})
    )
    eos = tok.eos_id
    assert eos is not None
    logits = np.zeros((2, tok.vocab_size), dtype=np.float32)
    masked = apply_masks(logits, [strict, None], grammar.vocab_size)
    assert np.isneginf(masked[0, eos])  # "" is not an object yet
    assert not np.isneginf(masked[1]).any() and not np.isneginf(logits).any()
    for t in tok.encode_text('{"a":1}'):
        assert strict.consume_token(t)
    assert not np.isneginf(apply_masks(logits, [strict], grammar.vocab_size)[0, eos])
    loose = grammar.matcher(Constraint.json_schema({"type": "object"}, strict=False))
    assert all(loose.consume_token(t) for t in tok.encode_text('{"zz":1'))
    closed = grammar.matcher(Constraint.json_schema({"type": "object", "properties": {"a": {}}}))
    unlisted = tok.encode_text('{"zz"')
    assert closed.try_consume_tokens(unlisted) < len(unlisted)


def test_a_schema_the_grammar_engine_cannot_use_is_an_input_error() -> None:
    with pytest.raises(InputError, match="schema"):
        Constraint.json_schema({"type": "no-such-type"})


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build_demo_model(tmp_path_factory.mktemp("constrain"))


def test_the_demo_model_writes_valid_json_when_constrained(demo: Demo) -> None:
    engine = LLMEngine.from_bundle(demo.bundle(), num_slots=2, max_context=512)
    prompt = engine.tokenizer.encode("<｜begin▁of▁sentence｜><｜User｜>give me JSON<｜Assistant｜></think>")
    schema = Constraint.json_schema(SCHEMA)
    params = {
        f"r{i}": SamplingParams(temperature=0.8, seed=i, max_tokens=200, constraint=schema) for i in range(2)
    }
    text = run_all(engine, params, prompt)
    for value in text.values():
        jsonschema.validate(json.loads(value), SCHEMA)


def test_strict_closes_objects_but_not_a_property_named_like_a_keyword() -> None:
    schema = {"type": "object", "properties": {"type": {"type": "string"}, "properties": {"type": "object"}}}
    grammar = json.loads(Constraint.json_schema(schema).grammar)["grammars"][0]["json_schema"]
    assert grammar["additionalProperties"] is False
    assert grammar["properties"]["type"] == {"type": "string"}
    assert grammar["properties"]["properties"]["additionalProperties"] is False


def test_a_budget_that_runs_out_still_closes_the_json(tok: Tokenizer) -> None:
    """Random logits rarely close JSON on their own; every budget from the shortest possible output
    up must still end in a document that parses and validates, finished by EOS."""
    engine = LLMEngine(FakeRunner(vocab_size=tok.vocab_size, num_slots=8, max_context=512), tok)
    schema = Constraint.json_schema(SCHEMA)
    shortest = engine.shortest_output(schema)
    assert shortest is not None and shortest > 5
    params = {
        f"b{budget}-{seed}": SamplingParams(temperature=1.0, seed=seed, max_tokens=budget, constraint=schema)
        for budget in (shortest, shortest + 1, shortest + 7, shortest + 40)
        for seed in range(2)
    }
    for rid, value in run_all(engine, params, [5, 6, 7]).items():
        assert jsonschema.validate(json.loads(value), SCHEMA) is None, rid
    with pytest.raises(InputError, match=f"takes {shortest} tokens"):
        engine.add_request("small", [5, 6], SamplingParams(max_tokens=shortest - 1, constraint=schema))


def test_a_closing_plan_ends_strings_and_containers_first(tok: Tokenizer) -> None:
    grammar = GrammarTokenizer(tok)
    matcher = grammar.matcher(Constraint.json_object())
    assert all(matcher.consume_token(t) for t in tok.encode_text('{"a":[{"b":"xy'))
    plan = grammar.closing_plan(matcher)
    assert plan is not None and tok.decode(plan) == '"}]}'
    assert not matcher.is_accepting()  # the plan was found on a copy
