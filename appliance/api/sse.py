"""Server-Sent Events in OpenAI's dialect: ``data: <json>\\n\\n`` frames ending in ``data: [DONE]``.

:class:`SSEResponse` always watches for the client going away while it streams, and cancels the
producing generator when it does — that cancellation is what frees the engine slot and gets the
generation audited as cancelled, whatever ASGI spec version the server speaks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from json.encoder import encode_basestring
from typing import Any

import anyio
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["DONE", "TEXT_SLOT", "SSEResponse", "TextFrames", "sse_event"]

DONE = b"data: [DONE]\n\n"


def sse_event(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


# Stands for the text in a TextFrames payload; no generated text can contain it (NUL is not a token).
TEXT_SLOT = "\u0000enclave-text-slot\u0000"


class TextFrames:
    """The frames of one stream that differ only in one text field, as ``sse_event`` writes them.

    The payload (with :data:`TEXT_SLOT` where the text goes) is encoded once; each frame is then the
    encoded prefix, the JSON string of the text and the suffix — per token, one C call instead of
    re-encoding the whole object.
    """

    def __init__(self, payload: Any) -> None:
        slot = encode_basestring(TEXT_SLOT).encode()
        self._prefix, found, self._suffix = sse_event(payload).partition(slot)
        if not found or slot in self._suffix:
            raise ValueError("the payload must hold TEXT_SLOT exactly once")

    def __call__(self, text: str) -> bytes:
        return self._prefix + encode_basestring(text).encode() + self._suffix


class SSEResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], *, background: BackgroundTask | None = None) -> None:
        # Like StreamingResponse, never render a body: that would add ``Content-Length: 0``.
        self.status_code = 200
        self.background = background
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            try:
                await send(
                    {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
                )
                async for chunk in self._events:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                # Closing the generator runs its cleanup (engine cancel + audit) now, not at GC time.
                with anyio.CancelScope(shield=True):
                    aclose = getattr(self._events, "aclose", None)
                    if aclose is not None:
                        await aclose()
            tg.cancel_scope.cancel()
        if self.background is not None:
            await self.background()
