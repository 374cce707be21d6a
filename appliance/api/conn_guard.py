"""Limits on one HTTP connection, below the ASGI app (which only sees complete request heads).

uvicorn bounds the idle time between requests (``timeout_keep_alive``) but not how long a request
head or body may take to arrive, nor its header size under httptools, nor connections per address:
a red-team kept idle-after-handshake, one-header-byte-per-10-s and one-body-byte-per-10-s
connections open past 150 s, and a 32 MB header got a 200. :func:`guarded` wraps uvicorn's
httptools protocol with:

- a head deadline (``http_header_timeout_s``) from the connection's start, or from the first byte
  of each next request: the whole head must be in by then, else the connection is closed;
- a header size cap (``http_max_header_bytes``): past it, 431 and close;
- a body deadline (``http_body_timeout_s``) from the end of the head to the end of the body;
- a cap on open connections per client address (``http_max_connections_per_address``): one more
  is closed at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["ConnectionLimits", "guarded", "uvicorn_options"]

_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_per_address: int


def guarded(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """An httptools protocol class enforcing ``limits`` (one open-connection count per class)."""
    open_by_address: Counter[str] = Counter()

    class GuardedProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _counted: str | None = None
        _in_head = True
        _head_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else ""
            if open_by_address[host] >= limits.max_per_address:
                transport.abort()
                return
            open_by_address[host] += 1
            self._counted = host
            self._arm(limits.header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted is not None:
                open_by_address[self._counted] -= 1
                if open_by_address[self._counted] <= 0:
                    del open_by_address[self._counted]
                self._counted = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_head and self.parser is not None:
                self._head_bytes += len(data)
                if self._head_bytes > limits.max_header_bytes and not self.transport.is_closing():
                    self.transport.write(_TOO_LARGE)
                    self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._head_bytes = 0
            if self._deadline is None:
                self._arm(limits.header_timeout_s)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._arm(limits.body_timeout_s)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol


def uvicorn_options(limits: ConnectionLimits, http: str) -> dict[str, Any]:
    """uvicorn settings for ``http`` ("httptools" gets the guarded protocol; h11 its own size cap)."""
    if http == "httptools":
        return {"http": guarded(limits)}
    return {"http": "h11", "h11_max_incomplete_event_size": limits.max_header_bytes}
