"""Turning a request's prompt text into token ids without letting the text hurt the server.

    encode_prompt(texts, encode)   byte size of every text (UTF-8)      -> 400 if not valid Unicode
                                   over settings.max_prompt_bytes?       -> 400, audited generation.refused
                                   encode() on a worker thread           -> the ids

Why each step:

- A lone surrogate (``"a\\ud800b"``, legal in JSON as ``\\ud800``) is not Unicode text; the tokenizer
  raises a TypeError on it, which was a 500. Measuring the UTF-8 size finds it first, for free.
- Tokenizing is CPU work proportional to the text (seconds for megabytes); on the event loop it froze
  every other request, health checks included. It runs on a worker thread, and only after the size
  is known to be within the bound, so one request's work is capped by a setting, not by the caller.
- A refusal is something an authenticated caller did, so it is audited like a quota refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import anyio

from appliance.api.auditing import Auditor, Caller, RequestInfo
from appliance.api.errors import ApiError

__all__ = ["encode_prompt", "utf8_size"]


def utf8_size(texts: Iterable[tuple[str, str]]) -> int:
    """Total UTF-8 size of ``(param, text)`` pairs; ApiError 400 naming the first that is not
    valid Unicode text (a lone surrogate)."""
    total = 0
    for param, text in texts:
        try:
            total += len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ApiError(
                400,
                f"{param} is not valid Unicode text (a lone surrogate at character {exc.start})",
                code="invalid_text",
                param=param,
            ) from None
    return total


async def encode_prompt(
    *,
    auditor: Auditor,
    caller: Caller,
    info: RequestInfo,
    endpoint: str,
    model_id: str,
    max_bytes: int,
    texts: Iterable[tuple[str, str]],
    encode: Callable[[], list[int]],
) -> list[int]:
    """``encode()`` run off the event loop, once ``texts`` (everything ``encode`` will read, as
    ``(param, text)``) is known to be valid text of at most ``max_bytes`` UTF-8 bytes."""
    pairs = list(texts)
    size = utf8_size(pairs)
    if size > max_bytes:
        await auditor.record_quietly(
            caller,
            info,
            action="generation.refused",
            target=f"model:{model_id}",
            outcome="denied",
            details={"endpoint": endpoint, "reason": "prompt_too_large", "prompt_bytes": size},
        )
        raise ApiError(
            400,
            f"the prompt is {size} bytes; this appliance accepts at most {max_bytes} bytes of prompt text",
            code="prompt_too_large",
            param=pairs[0][0] if pairs else None,
        )
    try:
        return await anyio.to_thread.run_sync(encode)
    except UnicodeEncodeError as exc:
        # Belt and braces: a text the route did not list still must not become a 500.
        raise ApiError(
            400, f"the prompt is not valid Unicode text: {exc.reason}", code="invalid_text"
        ) from None
