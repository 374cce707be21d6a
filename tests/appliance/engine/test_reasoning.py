"""Thinking mode in the engine: reasoning and answer kept apart, the reasoning cap, stops, ends."""

from __future__ import annotations

import pytest

from appliance.engine.engine import LLMEngine
from appliance.engine.tokenizer import Tokenizer
from appliance.engine.types import Delta, SamplingParams
from shared.errors import InputError
from tests.helpers.engine_fake_runner import FakeRunner, scripted_logits
from tests.helpers.engine_tokenizer import build_tokenizer

PROMPT = [5, 6, 7]
REASONING = "think about it. STOP and think"
ANSWER = "def hello(name):\n    return 1\n"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return build_tokenizer()


def run(tok: Tokenizer, script: list[int], params: SamplingParams, *, max_context: int = 128) -> list[Delta]:
    runner = FakeRunner(
        vocab_size=tok.vocab_size,
        max_context=max_context,
        next_logits=scripted_logits(tok.vocab_size, script, len(PROMPT)),
    )
    engine = LLMEngine(runner, tok)
    engine.add_request("r", PROMPT, params)
    deltas: list[Delta] = []
    while engine.has_work:
        deltas += [out.delta for out in engine.step()]
    return deltas


def thought(tok: Tokenizer, *, closed: bool = True, eos: bool = True) -> list[int]:
    end = [tok.token_id("</think>")] if closed else []
    tail = [tok.eos_id] if eos else []
    return [*tok.encode(REASONING), *end, *tok.encode(ANSWER), *tail]  # type: ignore[list-item]


def test_reasoning_then_answer_never_mixed(tok: Tokenizer) -> None:
    deltas = run(tok, thought(tok), SamplingParams(temperature=0.0, max_tokens=200, thinking=True))
    assert "".join(d.reasoning for d in deltas) == REASONING
    assert "".join(d.text for d in deltas) == ANSWER
    # Every piece of reasoning comes before the first piece of the answer.
    first_answer = next(i for i, d in enumerate(deltas) if d.text)
    assert not any(d.reasoning for d in deltas[first_answer + 1 :])
    last = deltas[-1]
    assert last.finish_reason == "stop"
    assert last.reasoning_tokens == len(tok.encode(REASONING))
    assert last.completion_tokens == len(thought(tok))


def test_stop_strings_end_the_answer_not_the_reasoning(tok: Tokenizer) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=200, thinking=True, stop=("STOP", "return"))
    deltas = run(tok, thought(tok), params)
    assert "".join(d.reasoning for d in deltas) == REASONING
    assert "".join(d.text for d in deltas) == "def hello(name):\n    "
    assert deltas[-1].finish_reason == "stop"


def test_the_cap_closes_the_think_block_and_the_answer_follows(tok: Tokenizer) -> None:
    # A model that would reason on and on: the engine writes </think> after 4 reasoning tokens.
    script = thought(tok, closed=False)
    params = SamplingParams(temperature=0.0, max_tokens=200, thinking=True, max_reasoning_tokens=4)
    deltas = run(tok, script, params)
    ids = [t for d in deltas for t in d.token_ids]
    assert ids[:5] == [*script[:4], tok.token_id("</think>")]
    assert "".join(d.reasoning for d in deltas) == tok.decode(script[:4])
    assert deltas[-1].reasoning_tokens == 4
    # After </think> every token is answer text, and the model went on from where it was.
    assert "".join(d.text for d in deltas) == tok.decode(script[5:])


def test_a_zero_cap_answers_without_reasoning(tok: Tokenizer) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=20, thinking=True, max_reasoning_tokens=0)
    deltas = run(tok, thought(tok), params)
    assert deltas[0].token_ids == (tok.token_id("</think>"),)
    assert all(d.reasoning == "" for d in deltas) and deltas[-1].reasoning_tokens == 0


def test_eos_while_reasoning_ends_with_reasoning_only(tok: Tokenizer) -> None:
    script = [*tok.encode(REASONING), tok.eos_id]
    deltas = run(tok, script, SamplingParams(temperature=0.0, max_tokens=200, thinking=True))  # type: ignore[list-item]
    assert "".join(d.reasoning for d in deltas) == REASONING
    assert all(d.text == "" for d in deltas)
    assert deltas[-1].finish_reason == "stop"


def test_length_while_reasoning_flushes_the_reasoning(tok: Tokenizer) -> None:
    script = thought(tok, closed=False)
    deltas = run(tok, script, SamplingParams(temperature=0.0, max_tokens=5, thinking=True))
    assert deltas[-1].finish_reason == "length"
    assert "".join(d.reasoning for d in deltas) == tok.decode(script[:5])
    assert deltas[-1].reasoning_tokens == 5


def test_without_thinking_nothing_is_reasoning(tok: Tokenizer) -> None:
    deltas = run(tok, thought(tok), SamplingParams(temperature=0.0, max_tokens=200))
    assert all(d.reasoning == "" and d.reasoning_tokens == 0 for d in deltas)
    assert "".join(d.text for d in deltas) == REASONING + ANSWER


def test_a_negative_cap_is_refused_before_anything_is_queued(tok: Tokenizer) -> None:
    engine = LLMEngine(FakeRunner(vocab_size=tok.vocab_size), tok)
    with pytest.raises(InputError, match="max_reasoning_tokens"):
        engine.add_request("a", PROMPT, SamplingParams(thinking=True, max_reasoning_tokens=-1))
    assert not engine.has_work
