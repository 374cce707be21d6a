"""Constraint.tool_call: whatever a model picks among the tokens the grammar allows, the text is a
well-formed DSML call of an offered tool whose arguments validate against its schema. A uniform
random pick over the allowed tokens stands in for the worst possible weights."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import appliance.model
from appliance.engine.constrain import Constraint, GrammarTokenizer
from appliance.engine.dsml import parse_completion
from appliance.engine.tokenizer import Tokenizer
from shared.errors import InputError

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "note": {"type": "string", "description": "free text: the raw form is allowed"},
        "where": {"$ref": "#/$defs/place"},
    },
    "required": ["city", "unit"],
    "$defs": {"place": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]}},
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
]
SCHEMAS = {"get_weather": WEATHER, "now": {"type": "object", "properties": {}, "additionalProperties": False}}


@pytest.fixture(scope="module")
def grammar_tok() -> tuple[Tokenizer, GrammarTokenizer]:
    tok = Tokenizer.from_file(Path(appliance.model.__file__).parent / "demo_model" / "tokenizer.json")
    return tok, GrammarTokenizer(tok)


def _sample(grammar_tok: tuple[Tokenizer, GrammarTokenizer], constraint: Constraint, seed: int) -> str:
    tok, gt = grammar_tok
    matcher = gt.matcher(constraint)
    rng = random.Random(seed)
    out: list[int] = []
    for _ in range(2000):
        bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        allowed = np.flatnonzero(bits[: gt.vocab_size])
        token = int(allowed[rng.randrange(len(allowed))])
        if token == tok.eos_id:
            assert matcher.is_accepting()
            return tok.decode(out)
        assert matcher.consume_token(token), matcher.get_error()
        out.append(token)
    raise AssertionError("the grammar never let the call end")


@pytest.mark.parametrize("seed", range(8))
def test_random_picks_still_make_valid_calls(
    grammar_tok: tuple[Tokenizer, GrammarTokenizer], seed: int
) -> None:
    text = _sample(grammar_tok, Constraint.tool_call(TOOLS), seed)
    content, calls = parse_completion(text, SCHEMAS)
    assert content == "" and calls, text
    for call in calls:
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])


@pytest.mark.parametrize("seed", range(4))
def test_a_named_choice_without_parallel_calls_is_one_call_of_that_tool(
    grammar_tok: tuple[Tokenizer, GrammarTokenizer], seed: int
) -> None:
    text = _sample(grammar_tok, Constraint.tool_call(TOOLS, "get_weather", parallel=False), seed)
    content, calls = parse_completion(text, ["get_weather"])
    assert content == "" and [c.name for c in calls] == ["get_weather"], text
    args = json.loads(calls[0].arguments)
    jsonschema.validate(args, WEATHER)
    assert {"city", "unit"} <= set(args)


def test_unusable_tool_choices_are_input_errors() -> None:
    with pytest.raises(InputError, match="not among the tools"):
        Constraint.tool_call(TOOLS, "missing")
    with pytest.raises(InputError, match="does not define"):
        Constraint.tool_call([{"name": "f", "parameters": {"type": "object", "required": ["x"]}}])
    with pytest.raises(InputError, match="cannot be written"):
        Constraint.tool_call([{"name": 'bad"name'}])
