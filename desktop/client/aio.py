"""The appliance's API for asyncio callers (the language server): the calls it needs, over the same
pinned-CA TLS, error mapping and stream reading as the blocking :class:`desktop.client.api.ApplianceClient`.

Why a second client: a language server cancels generations all the time (every keystroke makes
the previous completion stale). Cancelling the task that reads a stream here closes the HTTP
connection at once, so the appliance cancels the generation (freeing its slot, auditing
``generation.cancelled``) even while it is still prefilling and no line has come back — the
blocking client can only notice a cancel between lines.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from desktop.client.errors import response_error, transport_error
from desktop.client.methods import LOGIN_PATHS, Account, parse_methods
from desktop.client.sse import DONE, StreamEvent, chat_events, completion_events, sse_payload
from desktop.client.tls import ssl_context
from shared.errors import NotFoundError
from shared.schemas import (
    AuthMethods,
    ChatCompletionRequest,
    CompletionRequest,
    LoginRequest,
    LoginResponse,
    Me,
)

__all__ = ["AsyncApplianceClient", "ModelInfo"]

_TIMEOUT = httpx.Timeout(connect=5.0, read=120.0, write=30.0, pool=5.0)


@dataclass(frozen=True)
class ModelInfo:
    id: str
    # None while the appliance does not say (older appliances list ids only).
    context_length: int | None = None


class AsyncApplianceClient:
    """One appliance, one credential (or none, before sign-in)."""

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: Path | None = None,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        ca_fingerprint: str = "",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._ca_fingerprint = ca_fingerprint
        if transport is None:
            if ca_file is None:
                raise ValueError("a real connection needs the pinned CA file")
            transport = httpx.AsyncHTTPTransport(verify=ssl_context(ca_file), retries=0)
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=_TIMEOUT)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def _raise_for(self, response: httpx.Response) -> None:
        if not response.is_success:
            body = await response.aread()
            raise response_error(response.status_code, response.reason_phrase, body, response.headers)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, headers=self._headers(), **kwargs)
        except httpx.TransportError as exc:
            raise transport_error(exc, self.base_url, self._ca_fingerprint) from None
        await self._raise_for(response)
        return response.json() if response.content else None

    async def health(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/healthz"))

    async def auth_methods(self) -> AuthMethods | None:
        """The sign-ins this appliance offers; None from an older appliance that does not say (404)."""
        try:
            return parse_methods(await self._json("GET", "/v1/auth/methods"))
        except NotFoundError:
            return None

    async def login(self, username: str, password: str, account: Account = "local") -> LoginResponse:
        """Sign a local Enclave account (or, with ``account="ldap"``, a directory account) in."""
        body = LoginRequest(username=username, password=password).model_dump()
        return LoginResponse.model_validate(await self._json("POST", LOGIN_PATHS[account], json=body))

    async def me(self) -> Me:
        return Me.model_validate(await self._json("GET", "/v1/auth/me"))

    async def models(self) -> list[ModelInfo]:
        data = await self._json("GET", "/v1/models")
        out = []
        for card in data.get("data", []):
            length = card.get("context_length") or card.get("max_model_len")
            out.append(ModelInfo(str(card["id"]), int(length) if isinstance(length, int) else None))
        return out

    async def _sse(
        self, path: str, body: Mapping[str, Any], on_open: Callable[[], None] | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        try:
            # Leaving this block (the end, an error, or the task being cancelled) closes the
            # connection; the appliance then stops the generation.
            async with self._http.stream("POST", path, json=body, headers=self._headers()) as response:
                await self._raise_for(response)
                if on_open is not None:
                    on_open()  # the appliance has admitted (and durably audited) the request
                async for line in response.aiter_lines():
                    payload = sse_payload(line)
                    if payload is DONE:
                        return
                    if isinstance(payload, dict):
                        yield payload
        except httpx.TransportError as exc:
            raise transport_error(exc, self.base_url, self._ca_fingerprint) from None

    async def stream_completion(
        self, request: CompletionRequest, *, on_open: Callable[[], None] | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        body = request.model_dump(exclude_none=True) | {"stream": True}
        async for payload in self._sse("/v1/completions", body, on_open):
            for event in completion_events(payload):
                yield event

    async def stream_chat(
        self, request: ChatCompletionRequest, *, on_open: Callable[[], None] | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        body = request.model_dump(exclude_none=True) | {"stream": True}
        async for payload in self._sse("/v1/chat/completions", body, on_open):
            for event in chat_events(payload):
                yield event
