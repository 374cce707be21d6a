"""ASGI middleware: request ids, the body-size limit (413) and per-route request counting, in one layer.

Written as plain ASGI callables rather than ``BaseHTTPMiddleware`` so streamed responses pass through
untouched and a client disconnect still reaches the streaming response.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.api.metrics import Metrics

__all__ = ["REQUEST_ID_HEADER", "EdgeMiddleware"]

REQUEST_ID_HEADER = "x-request-id"


class _BodyTooLarge(Exception):
    pass


def _error_body(message: str, code: str) -> bytes:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code, "param": None}}
    return json.dumps(body).encode()


class EdgeMiddleware:
    """Every HTTP request's first and last stop, in one layer (one wrapper around every streamed
    chunk's ``send``, not one per concern):

    - a request id (``scope["state"]["request_id"]``), echoed as ``X-Request-Id``. Always minted
      here: a client-chosen id would let a caller plant misleading ids in the audit log;
    - the body limit: bodies over ``limit`` bytes get 413, by header up front or by counting as
      they arrive;
    - responses counted by route template (not raw path, which would explode label cardinality),
      the 413s and 400s given here included.
    """

    def __init__(self, app: ASGIApp, *, limit: int, metrics: Metrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (REQUEST_ID_HEADER.encode(), request_id.encode())
        status = 0

        async def edge_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = dict(message)
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        try:
            await self._limited(scope, receive, edge_send, lambda: status != 0)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.inc(
                route=str(path), method=str(scope.get("method", "")), status=str(status or 500)
            )

    async def _limited(self, scope: Scope, receive: Receive, send: Send, started: Callable[[], bool]) -> None:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reply(send, 400, "invalid Content-Length header", "invalid_header")
                    return
                if declared > self.limit:
                    await self._too_large(send)
                    return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            if not started():
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        await _reply(send, 413, f"request body larger than {self.limit} bytes", "request_too_large")


async def _reply(send: Send, status: int, message: str, code: str) -> None:
    body = _error_body(message, code)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
