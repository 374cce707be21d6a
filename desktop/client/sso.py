"""Single sign-on for the desktop client (no Qt): the system browser plus a loopback redirect
(RFC 8252 §7.3), never an embedded web view.

:func:`sign_in_with_browser` listens on ``127.0.0.1:<free port>``, asks the appliance to start an
OIDC sign-in for that redirect URI, opens the provider's page in the user's browser, waits for the
one redirect carrying ``code`` and ``state``, and hands both to the appliance, which redeems the
code itself (PKCE verifier and client secret never reach this machine) and returns its own session.
"""

from __future__ import annotations

import http.server
import threading
import urllib.parse
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["SsoError", "SsoSession", "sign_in_with_browser"]

_DONE_PAGE = b"<!doctype html><title>Enclave</title><p>Signed in. You can close this window.</p>"


class SsoError(Exception):
    """The sign-in did not complete; the message says why, in one line."""


@dataclass(frozen=True)
class SsoSession:
    token: str
    username: str
    expires_at: str


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def sign_in_with_browser(
    api: httpx.Client,
    *,
    open_browser: Callable[[str], Any] = webbrowser.open,
    timeout_s: float = 300.0,
) -> SsoSession:
    """Sign in through the site's identity provider; ``api`` is the appliance connection."""
    got: dict[str, str] = {}
    arrived = threading.Event()

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            if "state" not in query:
                self.send_error(404)
                return
            got.update(query)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(_DONE_PAGE)
            arrived.set()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, name="sso-loopback", daemon=True)
    thread.start()
    try:
        redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/callback"
        started = api.post("/v1/auth/oidc/start", json={"redirect_uri": redirect_uri})
        if started.status_code != 200:
            raise SsoError(f"the appliance cannot start single sign-on: {_message(started)}")
        body = started.json()
        open_browser(body["authorization_url"])
        if not arrived.wait(timeout_s):
            raise SsoError("no answer from the browser sign-in in time")
    finally:
        server.shutdown()
        server.server_close()
    if got.get("state") != body["state"]:
        raise SsoError("the browser returned a different sign-in (state mismatch)")
    if "error" in got:
        raise SsoError(f"the identity provider refused: {got.get('error_description') or got['error']}")
    payload = {"state": got["state"], "code": got.get("code", "")}
    if "iss" in got:
        payload["iss"] = got["iss"]
    done = api.post("/v1/auth/oidc/callback", json=payload)
    if done.status_code != 200:
        raise SsoError(f"sign-in refused: {_message(done)}")
    result = done.json()
    return SsoSession(token=result["token"], username=result["username"], expires_at=result["expires_at"])
