from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.engine.tokenizer import IncrementalDetokenizer, Tokenizer
from shared.errors import ModelError
from tests.helpers.engine_tokenizer import build_tokenizer, write_tokenizer

MULTIBYTE = "naïve café 😀 中文 done € ok"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return build_tokenizer()


def stream(
    tok: Tokenizer, ids: list[int], *, stop: tuple[str, ...] = ()
) -> tuple[list[str], IncrementalDetokenizer]:
    detok = IncrementalDetokenizer(tok, stop=stop)
    chunks = [detok.push(i) for i in ids]
    chunks.append(detok.flush())
    return chunks, detok


def test_special_tokens_are_single_ids(tok: Tokenizer) -> None:
    ids = tok.encode("<｜User｜>hi<｜Assistant｜></think>")
    assert ids[0] == tok.token_id("<｜User｜>")
    assert ids[-2:] == [tok.token_id("<｜Assistant｜>"), tok.token_id("</think>")]


def test_from_file_round_trip_and_bad_file(tmp_path: Path) -> None:
    tok = Tokenizer.from_file(write_tokenizer(tmp_path / "tokenizer.json"))
    assert tok.decode(tok.encode("hello world")) == "hello world"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match=r"bad\.json"):
        Tokenizer.from_file(bad)


def test_multibyte_characters_split_across_tokens_are_never_broken(tok: Tokenizer) -> None:
    ids = tok.encode(MULTIBYTE)
    # The test means something only if some character really is spread over several tokens.
    assert any("\ufffd" in tok.decode([i]) for i in ids)
    chunks, _ = stream(tok, ids)
    assert all("\ufffd" not in c for c in chunks)
    assert "".join(chunks) == MULTIBYTE
    # Text is released as soon as the character is complete, not only at the end.
    assert sum(1 for c in chunks if c) > 5


def test_stop_string_spanning_tokens_ends_the_text_before_it(tok: Tokenizer) -> None:
    ids = tok.encode("say hello STOP and more")
    chunks, detok = stream(tok, ids, stop=("STOP",))
    assert "".join(chunks) == "say hello "
    assert detok.stopped and detok.stop_string == "STOP"
    # No chunk ever showed a piece of the stop string.
    assert not any("S" in c for c in chunks)


def test_text_that_only_looks_like_a_stop_string_is_released(tok: Tokenizer) -> None:
    ids = tok.encode("a STOrm is STOPPING")
    detok = IncrementalDetokenizer(tok, stop=("STOP!",))
    chunks = [detok.push(i) for i in ids]
    # "STO" of "STOrm" was held back, then released once "r" ruled the stop string out.
    assert "".join(chunks).startswith("a STOrm")
    assert "".join(chunks) + detok.flush() == "a STOrm is STOPPING"
    assert not detok.stopped


def test_multibyte_stop_string_spanning_byte_tokens(tok: Tokenizer) -> None:
    ids = tok.encode("price: 12€ total")
    chunks, detok = stream(tok, ids, stop=("€",))
    assert "".join(chunks) == "price: 12"
    assert detok.stopped


def test_earliest_of_several_stop_strings_wins(tok: Tokenizer) -> None:
    ids = tok.encode("one two three")
    chunks, detok = stream(tok, ids, stop=("three", "two"))
    assert "".join(chunks) == "one "
    assert detok.stop_string == "two"


def test_flush_releases_a_held_partial_stop_string(tok: Tokenizer) -> None:
    ids = tok.encode("end with ST")
    detok = IncrementalDetokenizer(tok, stop=("STOP",))
    pushed = "".join(detok.push(i) for i in ids)
    assert pushed == "end with "
    assert detok.flush() == "ST"


def test_invalid_bytes_are_eventually_released_as_replacement(tok: Tokenizer) -> None:
    lone_continuation = tok.encode("€")[1]  # a UTF-8 continuation byte on its own is never valid
    detok = IncrementalDetokenizer(tok)
    chunks = [detok.push(lone_continuation) for _ in range(8)]
    assert "\ufffd" in "".join(chunks)


def test_context_gives_the_first_token_its_left_neighbour(tok: Tokenizer) -> None:
    prompt = tok.encode("x = ")
    ids = tok.encode("x = 😀")[len(prompt) :]
    detok = IncrementalDetokenizer(tok, context=prompt)
    assert "".join(detok.push(i) for i in ids) + detok.flush() == "😀"


_ALPHABET = "ab ST€😀中é\n"


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(alphabet=_ALPHABET, max_size=30),
    stops=st.lists(st.text(alphabet=_ALPHABET, min_size=1, max_size=4), max_size=3),
)
def test_streamed_text_is_the_text_up_to_the_first_stop_string(text: str, stops: list[str]) -> None:
    """Generation stops at the first token after which the text holds a stop string — as a model
    being decoded would — and the stream is that text up to the earliest occurrence. (Not the earliest
    occurrence in the whole text: with stops "€" and "S€S", "S€S" streamed a character a token stops at
    "S€" and gives "S"; the last "S" would never have been generated.)"""
    tok = build_tokenizer()
    ids = tok.encode(text)
    chunks, detok = stream(tok, ids, stop=tuple(stops))
    expected, stopped = text, False
    for k in range(1, len(ids) + 1):
        so_far = tok.decode(ids[:k])
        if "\ufffd" in so_far:  # a character still incomplete is not text yet
            continue
        hits = [i for i in (so_far.find(s) for s in stops) if i >= 0]
        if hits:
            expected, stopped = so_far[: min(hits)], True
            break
    assert "".join(chunks) == expected
    assert detok.stopped == stopped
    assert all("\ufffd" not in c for c in chunks)


def test_a_stop_string_completed_first_ends_the_stream_there(tok: Tokenizer) -> None:
    ids = tok.encode("S€S")
    assert len(ids) == 5 and tok.decode(ids[:4]) == "S€"  # "S", the three bytes of "€", "S"
    chunks, detok = stream(tok, ids, stop=("€", "S€S"))
    assert "".join(chunks) == "S" and detok.stop_string == "€"
