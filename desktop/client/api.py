"""The appliance's HTTP API, as blocking calls (services run them in worker threads).

Every request goes over HTTPS to one appliance whose certificate must chain to the pinned CA;
generation streams are read as Server-Sent Events and end at ``data: [DONE]``. Errors come back as
exceptions from :mod:`shared.errors` (see :mod:`desktop.client.errors`) with the server's message.

The transport is a constructor argument so tests can hand in ``httpx.MockTransport``; by default it
is a real HTTPS transport that trusts only the pinned CA.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from desktop.client.errors import response_error, transport_error
from desktop.client.methods import LOGIN_PATHS, parse_methods
from desktop.client.sse import DONE, StreamEvent, chat_events, completion_events, sse_payload
from desktop.client.sso import SsoError, sign_in_with_browser
from desktop.client.tls import ssl_context
from shared.errors import AuthError, EnclaveError, NotFoundError
from shared.schemas import (
    AuthMethods,
    ChatCompletionRequest,
    CompletionRequest,
    LoginRequest,
    LoginResponse,
    Me,
    ModelCard,
    ModelList,
)

__all__ = ["ApplianceClient", "AuditQuery", "StreamEvent"]

_TIMEOUT = httpx.Timeout(connect=5.0, read=120.0, write=30.0, pool=5.0)


@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in ("actor", "action", "outcome"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.since is not None:
            out["since"] = self.since.isoformat()
        if self.until is not None:
            out["until"] = self.until.isoformat()
        return out


class ApplianceClient:
    """One appliance, one credential (or none, before sign-in)."""

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: Path | None = None,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        ca_fingerprint: str = "",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._ca_fingerprint = ca_fingerprint
        if transport is None:
            if ca_file is None:
                raise ValueError("a real connection needs the pinned CA file")
            transport = httpx.HTTPTransport(verify=ssl_context(ca_file), retries=0)
        self._http = httpx.Client(base_url=self.base_url, transport=transport, timeout=_TIMEOUT)

    def close(self) -> None:
        self._http.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _raise_for(self, response: httpx.Response) -> None:
        if not response.is_success:
            raise response_error(response.status_code, response.reason_phrase, response.read(), response.headers)

    def _transport_error(self, exc: httpx.TransportError) -> EnclaveError:
        return transport_error(exc, self.base_url, self._ca_fingerprint)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, headers=self._headers(), **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        self._raise_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- connection and sign-in ------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return dict(self._json("GET", "/healthz"))

    def auth_methods(self) -> AuthMethods | None:
        """The sign-ins this appliance offers (no token needed); None from an older appliance that
        does not say (404), which offers a password and perhaps single sign-on."""
        try:
            return parse_methods(self._json("GET", "/v1/auth/methods"))
        except NotFoundError:
            return None

    def login(self, username: str, password: str) -> LoginResponse:
        """Sign a local Enclave account in."""
        body = LoginRequest(username=username, password=password).model_dump()
        return LoginResponse.model_validate(self._json("POST", LOGIN_PATHS["local"], json=body))

    def login_ldap(self, username: str, password: str) -> LoginResponse:
        """Sign a directory (LDAP / Active Directory) account in with the directory's password."""
        body = LoginRequest(username=username, password=password).model_dump()
        return LoginResponse.model_validate(self._json("POST", LOGIN_PATHS["ldap"], json=body))

    def logout(self) -> None:
        self._request("POST", "/v1/auth/logout")

    def sign_in_browser(self, open_browser: Callable[[str], object], *, timeout_s: float = 300.0) -> str:
        """Single sign-on through the system browser (see :mod:`desktop.client.sso`); the session token."""
        try:
            return sign_in_with_browser(self._http, open_browser=open_browser, timeout_s=timeout_s).token
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        except SsoError as exc:
            raise AuthError(str(exc)) from None

    def change_password(self, old_password: str, new_password: str) -> None:
        """Change the signed-in user's password; the appliance then ends all their login sessions."""
        self._request("POST", "/v1/auth/password", json={"old_password": old_password, "new_password": new_password})

    def _model_cards(self) -> list[dict[str, Any]]:
        raw = self._json("GET", "/v1/models")
        cards = [c for c in raw.get("data", []) if isinstance(c, dict)]
        # Validated as the schema we know; fields a newer appliance adds are read where we use them.
        ModelList.model_validate({"object": raw.get("object", "list"),
                                  "data": [{k: c[k] for k in ModelCard.model_fields if k in c} for c in cards]})
        return cards

    def models(self) -> list[str]:
        return [str(c["id"]) for c in self._model_cards()]

    def model_context_lengths(self) -> dict[str, int]:
        """Each model's context length in tokens, where ``/v1/models`` reports one (``context_length``)."""
        return {str(c["id"]): int(c["context_length"]) for c in self._model_cards()
                if isinstance(c.get("context_length"), int)}

    def me(self) -> Me:
        """Who the current credential speaks for: role, permissions, teams, effective policy."""
        return Me.model_validate(self._json("GET", "/v1/auth/me"))

    # -- generation ------------------------------------------------------------------------------

    def _sse(self, path: str, body: Mapping[str, Any], cancel: threading.Event | None) -> Iterator[dict[str, Any]]:
        try:
            with self._http.stream("POST", path, json=body, headers=self._headers()) as response:
                self._raise_for(response)
                for line in response.iter_lines():
                    if cancel is not None and cancel.is_set():
                        return  # leaving the block closes the connection: the server cancels the generation
                    payload = sse_payload(line)
                    if payload is DONE:
                        return
                    if isinstance(payload, dict):
                        yield payload
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None

    def stream_chat(self, request: ChatCompletionRequest, cancel: threading.Event | None = None) -> Iterator[StreamEvent]:
        # Usage comes once, on the last chunk, only when asked for (as OpenAI sends it).
        body = request.model_dump(exclude_none=True) | {"stream": True, "stream_options": {"include_usage": True}}
        for payload in self._sse("/v1/chat/completions", body, cancel):
            yield from chat_events(payload)

    def stream_completion(self, request: CompletionRequest, cancel: threading.Event | None = None) -> Iterator[StreamEvent]:
        # Usage comes once, on the last chunk, only when asked for (as OpenAI sends it).
        body = request.model_dump(exclude_none=True) | {"stream": True, "stream_options": {"include_usage": True}}
        for payload in self._sse("/v1/completions", body, cancel):
            yield from completion_events(payload)

    # -- audit -----------------------------------------------------------------------------------

    def audit_events(self, query: AuditQuery, *, limit: int = 100, cursor: int | None = None) -> dict[str, Any]:
        params: dict[str, str | int] = {**query.params(), "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        return dict(self._json("GET", "/v1/audit/events", params=params))

    def audit_verify(self) -> dict[str, Any]:
        return dict(self._json("GET", "/v1/audit/verify"))

    def audit_export(self, fmt: str, destination: Path, *, since: dt.datetime | None = None) -> int:
        """Stream an export into ``destination`` (written whole or not at all); returns its line count."""
        params = {"format": fmt} | ({"since": since.isoformat()} if since else {})
        tmp = destination.with_name(destination.name + ".part")
        lines = 0
        try:
            with self._http.stream("GET", "/v1/audit/export", params=params, headers=self._headers()) as response:
                self._raise_for(response)
                with open(tmp, "wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
                        lines += chunk.count(b"\n")
            tmp.replace(destination)
        except httpx.TransportError as exc:
            tmp.unlink(missing_ok=True)
            raise self._transport_error(exc) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return lines

    def audit_sealed(self, ref: str) -> dict[str, str]:
        return dict(self._json("GET", f"/v1/audit/sealed/{ref}"))

    # -- admin -----------------------------------------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/admin/users"))

    def add_user(self, username: str, role: str, password: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"username": username, "role": role}
        if password:
            body["password"] = password
        return dict(self._json("POST", "/v1/admin/users", json=body))

    def set_user_disabled(self, username: str, disabled: bool) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/admin/users/{username}/{'disable' if disabled else 'enable'}"))

    def set_role(self, username: str, role: str) -> dict[str, Any]:
        return dict(self._json("PUT", f"/v1/admin/users/{username}/role", json={"role": role}))

    def tokens(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/admin/tokens"))

    def revoke_token(self, token_id: int) -> None:
        self._request("DELETE", f"/v1/admin/tokens/{token_id}")

    def teams(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/admin/teams"))

    def set_policy(self, team: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        result = self._json("PATCH", f"/v1/admin/teams/{team}/policy", json=dict(changes))
        return None if result is None else dict(result)
