"""SSE frames: the per-token template writes exactly what encoding the whole chunk would."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.api.sse import TEXT_SLOT, TextFrames, sse_event


def _chunk(text: str) -> dict[str, object]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m\u00e9",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None, "logprobs": None}],
    }


@given(st.text())
def test_template_frames_equal_whole_encoding(text: str) -> None:
    frames = TextFrames(_chunk(TEXT_SLOT))
    assert frames(text) == sse_event(_chunk(text))
    assert json.loads(frames(text)[6:])["choices"][0]["delta"]["content"] == text


def test_tricky_text_round_trips() -> None:
    frames = TextFrames(_chunk(TEXT_SLOT))
    for text in ['"', "\\", "\n\t", "\u2028\u2029", "\x00", "é😀", "</script>"]:
        assert frames(text) == sse_event(_chunk(text))


def test_payload_without_the_slot_is_refused() -> None:
    with pytest.raises(ValueError):
        TextFrames(_chunk("no slot"))
    with pytest.raises(ValueError):
        TextFrames({"a": TEXT_SLOT, "b": TEXT_SLOT})
