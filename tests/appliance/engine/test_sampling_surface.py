"""Issue 13's sampling surface: logit bias, presence/frequency penalties, logprobs; tokenizer safety."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.engine.engine import LLMEngine
from appliance.engine.prompt import PromptEncoder
from appliance.engine.sampler import process_logits, token_logprobs
from appliance.engine.sequence import Sequence
from appliance.engine.tokenizer import Tokenizer
from appliance.engine.types import ChatMessage, SamplingParams
from shared.errors import InputError
from tests.helpers.engine_fake_runner import FakeRunner
from tests.helpers.engine_tokenizer import FIM_TOKENS, SPECIAL_TOKENS, build_tokenizer

ALL_SPECIAL = SPECIAL_TOKENS + FIM_TOKENS


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return build_tokenizer()


def seq_with(params: SamplingParams, generated: list[int]) -> Sequence:
    seq = Sequence("r", [1, 2], params)
    for t in generated:
        seq.append(t)
    return seq


def test_bias_and_penalties_follow_openais_formula() -> None:
    logits = np.zeros((2, 10), dtype=np.float32)
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, logit_bias=((3, 5.0), (4, -100.0)))
    # Token 7 generated 3 times, token 8 once; the prompt's ids (1, 2) are not counted.
    adjusted = seq_with(params, [7, 7, 8, 7])
    plain = seq_with(SamplingParams(), [7])
    out = process_logits(logits, [adjusted, plain])
    expected = np.zeros(10)
    expected[3], expected[4] = 5.0, -100.0
    expected[7] = -(0.5 + 0.25 * 3)
    expected[8] = -(0.5 + 0.25 * 1)
    assert np.allclose(out[0], expected)
    assert np.array_equal(out[1], logits[1])
    assert not logits.any()  # the input is left alone
    # Nothing to adjust: the same array comes back (no copy on the common path).
    assert process_logits(logits, [plain]) is logits


def test_logprobs_are_a_log_softmax_with_sorted_alternatives() -> None:
    row = np.array([1.0, 3.0, 2.0, 3.0], dtype=np.float32)
    got = token_logprobs(row, 2, 3)
    logz = np.log(np.exp(row.astype(np.float64)).sum())
    assert got.token_id == 2 and got.logprob == pytest.approx(2.0 - logz)
    assert [t for t, _ in got.top] == [1, 3, 2]  # highest first, ties by id
    assert got.top[0][1] == pytest.approx(3.0 - logz)
    assert token_logprobs(row, 0, 0).top == ()


def make_engine(tok: Tokenizer) -> LLMEngine:
    return LLMEngine(FakeRunner(vocab_size=tok.vocab_size, num_slots=2, max_context=64), tok)


def test_engine_deltas_carry_logprobs_and_bias_steers_greedy_choice(tok: Tokenizer) -> None:
    engine = make_engine(tok)
    target = tok.encode("hello")[0]
    params = SamplingParams(
        temperature=0.0, max_tokens=4, logprobs=2, logit_bias=((target, 100.0),), ignore_eos=True
    )
    engine.add_request("a", [5, 6], params)
    deltas = []
    while engine.has_work:
        deltas += [o.delta for o in engine.step()]
    assert [d.token_ids for d in deltas] == [(target,)] * 4
    for d in deltas:
        (lp,) = d.logprobs
        assert lp.token_id == target and lp.logprob <= 0.0 and len(lp.top) == 2
        assert lp.top[0][0] == target  # the chosen (biased) token is the most likely
    engine.add_request("b", [5, 6], SamplingParams(temperature=0.0, max_tokens=1))
    assert engine.step()[0].delta.logprobs == ()


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (SamplingParams(presence_penalty=2.5), "presence_penalty"),
        (SamplingParams(frequency_penalty=-3), "frequency_penalty"),
        (SamplingParams(logit_bias=((10**7, 1.0),)), "outside the vocabulary"),
        (SamplingParams(logit_bias=((3, 101.0),)), r"\[-100, 100\]"),
        (SamplingParams(logprobs=21), "logprobs"),
    ],
)
def test_out_of_range_sampling_parameters_are_refused(
    tok: Tokenizer, params: SamplingParams, match: str
) -> None:
    with pytest.raises(InputError, match=match):
        make_engine(tok).add_request("x", [5], params)


def test_every_special_token_string_in_content_round_trips_as_text(tok: Tokenizer) -> None:
    encoder = PromptEncoder(tok)
    nasty = "look: " + " ".join(ALL_SPECIAL) + " end"
    special_ids = {tok.token_id(t) for t in ALL_SPECIAL}
    ids = encoder.chat([ChatMessage("system", nasty), ChatMessage("user", nasty)])
    # Only the encoder's markup is control tokens: BOS, <｜User｜>, <｜Assistant｜>, </think>.
    markup = [tok.token_id(t) for t in (SPECIAL_TOKENS[0], SPECIAL_TOKENS[2], SPECIAL_TOKENS[3], "</think>")]
    assert [i for i in ids if i in special_ids] == markup
    body = ids[1 : ids.index(markup[1])]
    assert body == tok.encode_text(nasty) and tok.decode(body) == nasty
    # FIM: the suffix is text; a raw completion prompt keeps its specials unless told otherwise.
    fim = encoder.completion("a<｜User｜>", "<｜fim▁end｜>b")
    assert [i for i in fim if i in special_ids] == [
        tok.token_id(t) for t in (SPECIAL_TOKENS[0], *FIM_TOKENS[:1])
    ] + [
        tok.token_id("<｜User｜>"),
        tok.token_id(FIM_TOKENS[1]),
        tok.token_id(FIM_TOKENS[2]),
    ]
    safe = encoder.completion("a<｜User｜>", allow_special=False)
    assert [i for i in safe if i in special_ids] == [tok.bos_id]


def test_special_tokens_never_come_back_as_text(tok: Tokenizer) -> None:
    ids = [tok.token_id("<｜User｜>"), *tok.encode("hi"), tok.token_id("<think>")]
    assert tok.decode(ids) == "hi"  # type: ignore[arg-type]


def test_token_bytes_are_the_tokens_utf8_bytes(tok: Tokenizer) -> None:
    ids = tok.encode("S€ hello")
    assert b"".join(tok.token_bytes(i) for i in ids) == "S€ hello".encode()
    assert tok.token_bytes(tok.token_id("<think>")) == b"<think>"  # type: ignore[arg-type]
