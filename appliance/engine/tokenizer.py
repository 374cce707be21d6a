"""Text <-> token ids for a model bundle, and incremental detokenization for streaming.

The tokenizer is the bundle's ``tokenizer.json`` read by the ``tokenizers`` package. Two encodings:
:meth:`Tokenizer.encode` matches special-token strings (``<｜User｜>``, ``<think>``, ...) as single
control tokens (the prompt encoder's own markup, raw completion templates); :meth:`Tokenizer.encode_text`
treats them as ordinary text, for anything a user wrote (message content, suffixes, tool results), so
a pasted ``<｜Assistant｜>`` cannot switch roles. Decoding never yields special-token text.

:class:`IncrementalDetokenizer` turns generated ids into text one id at a time. It emits text only
when it is final: never half of a multi-byte UTF-8 character (byte-level BPE splits those across
tokens) and never the start of what could still become a stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tokenizers

from shared.errors import ModelError

__all__ = ["IncrementalDetokenizer", "Tokenizer"]

BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"

# A character is at most 4 UTF-8 bytes; byte-level BPE needs at most that many tokens to finish one.
# Past this many undecodable tokens the bytes are genuinely invalid and are emitted as U+FFFD.
_MAX_PENDING_TOKENS = 6
_REPLACEMENT = "\ufffd"


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable stand-in character -> its byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in mapping.items()}


_BYTE_DECODER = _byte_decoder()


class Tokenizer:
    """A ``tokenizers.Tokenizer`` with the few operations the engine needs."""

    def __init__(self, inner: tokenizers.Tokenizer) -> None:
        self._inner = inner
        # ``encode_special_tokens`` is a flag on the object, so text encoding gets its own copy
        # rather than flipping the flag on a tokenizer other threads use.
        self._text = tokenizers.Tokenizer.from_str(inner.to_str())
        self._text.encode_special_tokens = True
        self._special_ids = frozenset(int(i) for i in inner.get_added_tokens_decoder())

    @classmethod
    def from_file(cls, path: Path | str) -> Tokenizer:
        try:
            return cls(tokenizers.Tokenizer.from_file(str(path)))
        except Exception as exc:  # the tokenizers package raises bare Exception subclasses
            raise ModelError(f"{path}: cannot load tokenizer: {exc}") from None

    def to_json(self) -> str:
        """The tokenizer as ``tokenizer.json`` text (for the grammar engine's own index)."""
        return str(self._inner.to_str())

    @property
    def vocab_size(self) -> int:
        return int(self._inner.get_vocab_size(with_added_tokens=True))

    def token_id(self, token: str) -> int | None:
        """The id of ``token`` as one vocabulary entry, or None if the vocabulary lacks it."""
        found = self._inner.token_to_id(token)
        return None if found is None else int(found)

    @property
    def bos_id(self) -> int | None:
        return self.token_id(BOS_TOKEN)

    @property
    def eos_id(self) -> int | None:
        return self.token_id(EOS_TOKEN)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` as written: no BOS/EOS is added (prompt formats add their own).

        ``encode_batch`` releases the GIL while it works and ``encode`` does not: the API tokenizes
        on a worker thread, and with ``encode`` a 1 MB prompt still froze the event loop ~0.6 s."""
        return list(self._inner.encode_batch([text], add_special_tokens=False)[0].ids)

    def encode_text(self, text: str) -> list[int]:
        """Ids of ``text`` with every special-token string in it encoded as plain text."""
        return list(self._text.encode_batch([text], add_special_tokens=False)[0].ids)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of ``ids``; special (control) tokens are dropped, never rendered as text, unless
        ``skip_special`` is False (showing a prompt as the model sees it)."""
        return str(self._inner.decode(list(ids), skip_special_tokens=skip_special))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (byte-level BPE: possibly part of a UTF-8 character)."""
        piece = self._inner.id_to_token(token_id)
        if piece is None:
            return b""
        if token_id in self._special_ids:
            return piece.encode()
        if all(ch in _BYTE_DECODER for ch in piece):
            return bytes(_BYTE_DECODER[ch] for ch in piece)
        return self.decode([token_id]).encode()  # not a byte-level vocabulary


class IncrementalDetokenizer:
    """Turns one sequence's generated ids into final text, id by id.

    The text of a token depends on its neighbours (a multi-byte character spread over byte tokens;
    tokenizers that drop a leading space at the start of a decode), so each step decodes a short
    window that starts a few tokens back and emits only what it adds to the previous window
    (the technique of vLLM's detokenizer). Text that ends with U+FFFD is an unfinished character and
    waits for the next token.

    Stop strings: text that contains one ends the stream just before it (``stopped`` becomes True);
    a tail that is a prefix of some stop string is held back until it either completes the stop
    string or stops matching.
    """

    def __init__(
        self, tokenizer: Tokenizer, *, stop: Sequence[str] = (), context: Sequence[int] = ()
    ) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        # A few ids before the first generated one give the first window its left context.
        self._ids: list[int] = list(context[-4:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self._held = ""  # decoded text that may still be the beginning of a stop string
        self.stopped = False
        self.stop_string: str | None = None

    def push(self, token_id: int) -> str:
        """Add one generated id; return the text that became final (often "", never partial)."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        return self._guard(self._advance(force=False))

    def flush(self) -> str:
        """The stream ended for another reason (length, stop token): emit everything held back."""
        if self.stopped:
            return ""
        text = self._held + self._advance(force=True)
        self._held = ""
        if self._stop:
            cut = self._find_stop(text)
            if cut is not None:
                text = text[:cut]
        return text

    def _advance(self, *, force: bool) -> str:
        window = self._ids[self._prefix_offset :]
        if len(window) == self._read_offset - self._prefix_offset:
            return ""
        prefix_text = self._tokenizer.decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._tokenizer.decode(window)
        pending = len(self._ids) - self._read_offset
        if not force and full_text.endswith(_REPLACEMENT) and pending < _MAX_PENDING_TOKENS:
            return ""
        if len(full_text) <= len(prefix_text) and not force:
            # The new ids decoded to nothing yet (e.g. a tokenizer that merges on the next id).
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return full_text[len(prefix_text) :]

    def _find_stop(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        return min(hits) if hits else None

    def _guard(self, new_text: str) -> str:
        if not self._stop:
            return new_text
        text = self._held + new_text
        cut = self._find_stop(text)
        if cut is not None:
            self.stopped = True
            self.stop_string = next(s for s in self._stop if text.find(s) == cut)
            self._held = ""
            return text[:cut]
        keep = self._partial_stop_len(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def _partial_stop_len(self, text: str) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stop:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best
