from __future__ import annotations

import pytest

from appliance.engine.prompt import PromptEncoder, render_chat, render_fim
from appliance.engine.types import ChatMessage
from shared.errors import InputError
from tests.helpers.engine_tokenizer import build_tokenizer

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
U, A = "<｜User｜>", "<｜Assistant｜>"

CONVERSATION = [
    ChatMessage("user", "hello"),
    ChatMessage("assistant", "Hello! I am DeepSeek.", reasoning="thinking..."),
    ChatMessage("user", "1+1=?"),
]


def test_thinking_mode_drops_old_reasoning_and_opens_a_think_block() -> None:
    assert render_chat(CONVERSATION, thinking=True) == (
        f"{BOS}{U}hello{A}</think>Hello! I am DeepSeek.{EOS}{U}1+1=?{A}<think>"
    )


def test_thinking_mode_keeps_reasoning_when_not_dropping() -> None:
    # The encoder: without dropping, every reply opens a think block (its reasoning sits inside it).
    assert render_chat(CONVERSATION, thinking=True, drop_thinking=False) == (
        f"{BOS}{U}hello{A}<think>thinking...</think>Hello! I am DeepSeek.{EOS}{U}1+1=?{A}<think>"
    )


def test_chat_mode_closes_every_think_block() -> None:
    assert render_chat([ChatMessage("system", "S"), ChatMessage("user", "hi")], thinking=False) == (
        f"{BOS}S{U}hi{A}</think>"
    )
    assert render_chat(CONVERSATION, thinking=False) == (
        f"{BOS}{U}hello{A}</think>Hello! I am DeepSeek.{EOS}{U}1+1=?{A}</think>"
    )


def test_assistant_turn_after_last_user_keeps_its_reasoning_in_thinking_mode() -> None:
    messages = [ChatMessage("user", "q"), ChatMessage("assistant", "a", reasoning="r")]
    assert render_chat(messages, thinking=True) == f"{BOS}{U}q{A}<think>r</think>a{EOS}"
    assert render_chat(messages, thinking=False) == f"{BOS}{U}q{A}</think>a{EOS}"


def test_consecutive_user_turns_merge_into_one_as_the_encoder_does() -> None:
    messages = [ChatMessage("user", "a"), ChatMessage("user", "b")]
    assert render_chat(messages, thinking=False) == f"{BOS}{U}a\n\nb{A}</think>"


def test_bad_chats_are_input_errors() -> None:
    with pytest.raises(InputError, match="at least one message"):
        render_chat([], thinking=False)
    with pytest.raises(InputError, match="robot"):
        render_chat([ChatMessage("robot", "x")], thinking=False)  # type: ignore[arg-type]


def test_encoder_produces_special_tokens_as_single_ids() -> None:
    tok = build_tokenizer()
    ids = PromptEncoder(tok).chat([ChatMessage("user", "hi")], thinking=True)
    assert ids[0] == tok.bos_id
    assert ids[1] == tok.token_id(U)
    assert ids[-2:] == [tok.token_id(A), tok.token_id("<think>")]
    assert tok.decode(ids, skip_special=False) == f"{BOS}{U}hi{A}<think>"


def test_fill_in_the_middle() -> None:
    tok = build_tokenizer()
    encoder = PromptEncoder(tok)
    assert encoder.supports_fim
    ids = encoder.completion("def f():\n    ", "\n    return x\n")
    assert tok.decode(ids, skip_special=False) == render_fim("def f():\n    ", "\n    return x\n")
    for special in ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"):
        assert tok.token_id(special) in ids
    assert tok.decode(encoder.completion("plain"), skip_special=False) == f"{BOS}plain"


def test_fill_in_the_middle_without_fim_tokens_names_the_missing_token() -> None:
    encoder = PromptEncoder(build_tokenizer(fim=False))
    assert not encoder.supports_fim
    with pytest.raises(InputError, match="<｜fim▁begin｜>"):
        encoder.completion("a", "b")
    assert encoder.completion("a")  # plain completion still works


def test_think_max_writes_the_effort_instruction_before_the_first_message() -> None:
    from appliance.engine.prompt import REASONING_EFFORT_MAX

    messages = [ChatMessage("system", "S"), ChatMessage("user", "q")]
    assert REASONING_EFFORT_MAX.startswith("Reasoning Effort: Absolute maximum with no shortcuts permitted.\n")
    assert REASONING_EFFORT_MAX.endswith("no assumption is left unchecked.\n\n")
    assert render_chat(messages, thinking=True, reasoning_effort="max") == (
        f"{BOS}{REASONING_EFFORT_MAX}S{U}q{A}<think>"
    )
    # High is thinking mode as it is; in chat mode the effort writes nothing (the encoder's rule).
    assert render_chat(messages, thinking=True, reasoning_effort="high") == f"{BOS}S{U}q{A}<think>"
    assert render_chat(messages, thinking=False, reasoning_effort="max") == f"{BOS}S{U}q{A}</think>"


_TURNS = [
    {"role": "system", "content": "You write Python."},
    {"role": "user", "content": "def add(a, b):"},
    {"role": "assistant", "content": "    return a + b\n", "reasoning_content": "Sum them."},
    {"role": "user", "content": "def sub(a, b):"},
    {"role": "assistant", "content": "    return a - b\n", "reasoning_content": "Subtract."},
    {"role": "user", "content": "and mul?"},
]


@pytest.mark.parametrize("end", [2, 3, 4, 5, 6])
@pytest.mark.parametrize(("mode", "effort"), [("chat", None), ("thinking", "high"), ("thinking", "max")])
def test_chats_render_as_deepseeks_encoder_rules_give(end: int, mode: str, effort: str | None) -> None:
    from tests.helpers.dsv4_encoding import encode_messages

    turns = _TURNS[:end]
    messages = [ChatMessage(t["role"], t["content"], t.get("reasoning_content")) for t in turns]  # type: ignore[arg-type]
    ours = render_chat(messages, thinking=mode == "thinking", reasoning_effort=effort)  # type: ignore[arg-type]
    assert ours == encode_messages(turns, thinking_mode=mode, reasoning_effort=effort)
