"""An in-process fake of the appliance API for fast desktop UI tests (``httpx.MockTransport``).

It speaks the same wire format as the real appliance (shared.schemas shapes, SSE ending in
``data: [DONE]``, OpenAI error envelopes) with canned answers; the flows are also run against the
real appliance (``enclave demo``) in tests/desktop/test_e2e_appliance.py.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from appliance.auth.roles import permissions_for
from desktop.client.api import ApplianceClient

__all__ = ["FakeAppliance"]

ANSWER = "Use `unit_price` with a default.\n\n```python\n        return sum(unit_price(sku) * q for sku, q in self.items if q > 0)\n```\n"


def _err(status: int, message: str, code: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "x", "code": code}})


class FakeAppliance:
    def __init__(self, *, answer: str = ANSWER, completion: str = "_total = 0") -> None:
        self.answer = answer
        self.completion = completion
        self.passwords = {"dev": ("pw", "developer"), "aud": ("pw", "auditor"), "boss": ("pw", "admin")}
        self.tokens: dict[str, str] = {}  # token -> user
        # Users who signed in with a one-time password and must change it (as the appliance: only
        # /v1/auth/me, /logout and /password answer them; the rest is 403).
        self.must_change: set[str] = set()
        self.sso_user: str | None = None
        self.sso_states: dict[str, str] = {}
        # What GET /v1/auth/methods answers (None: 404, as an appliance from before it does).
        self.methods: list[dict[str, str]] | None = None
        # Directory accounts (POST /v1/auth/ldap/login): name -> (password, role); None: 409, not configured.
        self.directory: dict[str, tuple[str, str]] | None = None
        self.directory_down = False
        self.requests: list[dict[str, Any]] = []  # bodies of generation requests
        self.reachable = True
        # The policy's path exclusions, as /v1/auth/me reports them.
        self.path_exclusions: list[str] = [".env", "*.pem"]
        # Tokens the fake model takes; it counts two characters a token (a worse tokenizer than the
        # client's estimate of four), as the demo model's small vocabulary does.
        self.context_limit: int | None = None
        # The context length /v1/models reports (None: 8192, more than the fake takes when context_limit is set).
        self.reported_context: int | None = None
        self.events: list[dict[str, Any]] = []
        # Paces a chat stream: given the SSE frames, yields them as the test allows (None: all at once).
        self.pace: Callable[[list[bytes]], Iterator[bytes]] | None = None
        self.chunk_chars = 7  # characters of the answer per streamed piece
        # Streamed as reasoning_content deltas before the answer when a request asks for thinking.
        self.reasoning = "The cart sums its lines. Check the empty case first. "
        self.users: list[dict[str, Any]] = [
            {"id": i + 1, "username": u, "role": r, "teams": ["default"], "disabled": False,
             "must_change_password": False, "created_at": "2026-11-01T00:00:00Z"}
            for i, (u, (_, r)) in enumerate(self.passwords.items())
        ]
        self.token_rows: list[dict[str, Any]] = [{"id": 1, "username": "dev", "name": "laptop", "scopes": [], "created_at": "2026-11-01T00:00:00Z",
                            "expires_at": "2027-01-01T00:00:00Z", "revoked_at": None, "last_used_at": None, "status": "active"}]
        self.teams: list[dict[str, Any]] = [{"id": 1, "name": "default", "members": ["dev", "aud", "boss"], "policy": {"capture_mode": "sealed"}}]
        self.sealed: dict[str, dict[str, str]] = {}
        base = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
        for i in range(120):
            actor = ["user:dev", "user:aud"][i % 2]
            ref = str(uuid.UUID(int=i + 1))
            self.sealed[ref] = {"completion": f"sealed answer {i}"}
            self._event(actor, "generation.completed", "model:demo", "success", base + dt.timedelta(hours=i),
                        {"prompt_tokens": 10, "completion_tokens": i % 7}, {"mode": "sealed", "ref": ref})
        self._event("user:boss", "admin.user.role_changed", "user:dev", "success", base + dt.timedelta(days=6),
                    {"old": {"role": "auditor"}, "new": {"role": "developer"}}, None)

    def _event(self, actor: str, action: str, target: str, outcome: str, time: dt.datetime,
               details: dict[str, Any], content: dict[str, Any] | None) -> None:
        seq = len(self.events) + 1
        self.events.append({"seq": seq, "time": time.isoformat().replace("+00:00", "Z"), "actor": actor, "action": action,
                            "target": target, "outcome": outcome, "request_id": f"r{seq}", "client_address": "127.0.0.1",
                            "details": details, "content": content, "prev_hash": f"{seq - 1:064x}", "hash": f"{seq:064x}"})

    def client_factory(self, base_url: str, *, ca_file: Path | None = None, token: str | None = None,
                       ca_fingerprint: str = "") -> ApplianceClient:
        return ApplianceClient(base_url, token=token, transport=httpx.MockTransport(self.handle), ca_fingerprint=ca_fingerprint)

    def expire(self, token: str) -> None:
        self.tokens.pop(token, None)

    # -- the API ---------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not self.reachable:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok", "checks": {}})
        if path == "/v1/auth/login":
            body = json.loads(request.content)
            known = self.passwords.get(body["username"])
            if known is None or known[0] != body["password"]:
                return _err(401, "wrong user name or password", "invalid_api_key")
            token = f"encl_{uuid.uuid4().hex}"
            self.tokens[token] = body["username"]
            return httpx.Response(200, json={"token": token, "token_type": "bearer", "expires_at": "2026-12-01T00:00:00Z"})
        if path.startswith("/v1/auth/oidc/"):
            return self._oidc(path, json.loads(request.content))
        if path == "/v1/auth/methods":
            if self.methods is None:
                return _err(404, "not found", "not_found")
            return httpx.Response(200, json={"methods": self.methods})
        if path == "/v1/auth/ldap/login":
            return self._ldap(json.loads(request.content))
        auth = request.headers.get("authorization", "")
        user = self.tokens.get(auth.removeprefix("Bearer "))
        if user is None:
            return _err(401, "token expired or revoked", "invalid_api_key")
        role = self.passwords[user][1]
        if path == "/v1/auth/logout":
            self.tokens.pop(auth.removeprefix("Bearer "), None)
            return httpx.Response(204)
        if path == "/v1/auth/password":
            return self._change_password(user, json.loads(request.content))
        must_change = user in self.must_change
        if path == "/v1/auth/me":
            return httpx.Response(200, json={
                "username": user, "role": role,
                "permissions": ["password:change"] if must_change else sorted(p.value for p in permissions_for(role)),
                "teams": ["default"], "credential": "session", "scopes": None,
                "expires_at": "2026-12-01T00:00:00Z", "must_change_password": must_change,
                "policy": {"allowed_models": [["*"]], "requests_per_minute": 60, "tokens_per_minute": None,
                           "concurrent_streams": 4, "max_prompt_tokens": None, "max_output_tokens": None,
                           "capture_mode": "sealed", "path_exclusions": list(self.path_exclusions)},
            })
        if must_change:
            return _err(403, "the password must be changed before anything else", "permission_denied")
        if path == "/v1/models":
            n = self.reported_context or 8192
            card: dict[str, Any] = {
                "id": "deepseek-v4-demo", "object": "model", "created": 1, "owned_by": "enclave",
                "context_length": n, "max_model_len": n, "max_input_tokens": n, "max_tokens": n, "max_output_tokens": n,
                "capabilities": {"chat": True, "completions": True, "fim": True, "tools": False, "json": False,
                                 "logprobs": False},
            }
            return httpx.Response(200, json={"object": "list", "data": [card]})
        if path == "/v1/chat/completions":
            body = json.loads(request.content)
            self.requests.append(body)
            prompt = sum(len(m["content"]) for m in body["messages"]) // 2
            if self.context_limit is not None and prompt + body.get("max_tokens", 0) > self.context_limit:
                return _err(
                    400,
                    f"This model's maximum context length is {self.context_limit} tokens; the prompt has "
                    f"{prompt} tokens plus max_tokens {body.get('max_tokens')}.",
                    "context_length_exceeded",
                )
            return self._stream_chat(thinking=(body.get("thinking") or {}).get("type") == "enabled")
        if path == "/v1/completions":
            body = json.loads(request.content)
            self.requests.append(body)
            prompt = (len(body["prompt"]) + len(body.get("suffix") or "")) // 2
            if self.context_limit is not None and prompt + body.get("max_tokens", 0) > self.context_limit:
                return _err(400, f"This model's maximum context length is {self.context_limit} tokens; the prompt has "
                                 f"{prompt} tokens plus max_tokens {body.get('max_tokens')}.", "context_length_exceeded")
            chunk = {"id": "c", "object": "text_completion", "created": 1, "model": "m",
                     "choices": [{"index": 0, "text": self.completion, "finish_reason": "stop", "logprobs": None}]}
            return httpx.Response(200, content=b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n")
        if path.startswith("/v1/audit/"):
            # As on the appliance: auditors read, export, verify and decrypt; admins only verify.
            if not (role == "auditor" or (role == "admin" and path == "/v1/audit/verify")):
                return _err(403, "the audit log needs the auditor role", "permission_denied")
            return self._audit(request, path)
        if path.startswith("/v1/admin/"):
            if role != "admin":
                return _err(403, "needs the admin role", "permission_denied")
            return self._admin(request, path)
        return _err(404, "not found", "not_found")

    def _ldap(self, body: dict[str, str]) -> httpx.Response:
        if self.directory is None:
            return _err(409, "LDAP sign-in is not configured on this appliance (ldap_url)", "conflict")
        if self.directory_down:
            return _err(503, "directory ldaps://ldap.test is unreachable: socket connection error", "directory_unavailable")
        known = self.directory.get(body["username"])
        if known is None or known[0] != body["password"]:
            return _err(401, "wrong user name or password", "invalid_api_key")
        self.passwords.setdefault(body["username"], ("", known[1]))  # the account the appliance links
        token = f"encl_{uuid.uuid4().hex}"
        self.tokens[token] = body["username"]
        return httpx.Response(200, json={"token": token, "token_type": "bearer", "expires_at": "2026-12-01T00:00:00Z"})

    def _oidc(self, path: str, body: dict[str, str]) -> httpx.Response:
        # The appliance's half of single sign-on: the identity provider is whoever the test's browser
        # says signed in (``sso_user``; None: single sign-on is not configured).
        if self.sso_user is None:
            return _err(409, "single sign-on is not configured on this appliance (oidc_issuer)", "conflict")
        if path == "/v1/auth/oidc/start":
            state = uuid.uuid4().hex
            self.sso_states[state] = body["redirect_uri"]
            query = httpx.QueryParams({"redirect_uri": body["redirect_uri"], "state": state})
            return httpx.Response(200, json={"authorization_url": f"https://idp.test/authorize?{query}", "state": state})
        if body.get("state") not in self.sso_states or body.get("code") != "good-code":
            return _err(401, "the sign-in could not be verified", "invalid_api_key")
        del self.sso_states[body["state"]]
        token = f"encl_{uuid.uuid4().hex}"
        self.tokens[token] = self.sso_user
        return httpx.Response(200, json={"token": token, "username": self.sso_user, "expires_at": "2026-12-01T00:00:00Z"})

    def _change_password(self, user: str, body: dict[str, str]) -> httpx.Response:
        password, role = self.passwords[user]
        if body["old_password"] != password:
            return _err(401, "current password is wrong", "invalid_api_key")
        if body["new_password"] == password:
            return _err(400, "the new password must differ from the current one", "invalid_request")
        if len(body["new_password"]) < 12:
            return _err(400, "password too short: at least 12 characters", "invalid_request")
        self.passwords[user] = (body["new_password"], role)
        self.must_change.discard(user)
        # As the appliance: a new password ends every login session of the user.
        for token in [t for t, u in self.tokens.items() if u == user]:
            del self.tokens[token]
        return httpx.Response(204)

    def _stream_chat(self, *, thinking: bool = False) -> httpx.Response:
        frames = []
        step = self.chunk_chars
        for i in range(0, len(self.reasoning) if thinking else 0, step):
            frames.append({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                           "choices": [{"index": 0, "delta": {"reasoning_content": self.reasoning[i : i + step]},
                                        "finish_reason": None}]})
        for i in range(0, len(self.answer), step):
            frames.append({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                           "choices": [{"index": 0, "delta": {"content": self.answer[i : i + step]}, "finish_reason": None}]})
        frames.append({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        encoded = [b"data: " + json.dumps(f).encode() + b"\n\n" for f in frames] + [b"data: [DONE]\n\n"]
        if self.pace is not None:
            return httpx.Response(200, content=self.pace(encoded), headers={"content-type": "text/event-stream"})
        return httpx.Response(200, content=b"".join(encoded), headers={"content-type": "text/event-stream"})

    def _audit(self, request: httpx.Request, path: str) -> httpx.Response:
        q = request.url.params
        if path == "/v1/audit/events":
            rows = list(reversed(self.events))
            for key in ("actor", "outcome"):
                if key in q:
                    rows = [r for r in rows if r[key] == q[key]]
            if "action" in q:
                a = q["action"]
                rows = [r for r in rows if (r["action"].startswith(a.rstrip("*")) if a.endswith((".", "*")) else r["action"] == a)]
            if "since" in q:
                since = dt.datetime.fromisoformat(q["since"])
                rows = [r for r in rows if dt.datetime.fromisoformat(r["time"].replace("Z", "+00:00")) >= since]
            if "until" in q:
                until = dt.datetime.fromisoformat(q["until"])
                rows = [r for r in rows if dt.datetime.fromisoformat(r["time"].replace("Z", "+00:00")) < until]
            if "cursor" in q:
                rows = [r for r in rows if r["seq"] < int(q["cursor"])]
            limit = int(q.get("limit", 100))
            page = rows[:limit]
            return httpx.Response(200, json={"records": page, "next_cursor": page[-1]["seq"] if len(rows) > limit else None})
        if path == "/v1/audit/verify":
            n = len(self.events)
            return httpx.Response(200, json={"ok": True, "total": n, "valid": n, "problem": None, "problem_seq": None,
                                             "last_checkpoint": None, "summary": f"{n} records, chain intact"})
        if path == "/v1/audit/export":
            fmt = q.get("format", "jsonl")
            lines = [json.dumps(e) if fmt == "jsonl" else f"CEF:0|Enclave|Enclave Appliance|0.1|{e['action']}|x|3|externalId={e['seq']}" for e in self.events]
            return httpx.Response(200, content=("\n".join(lines) + "\n").encode())
        if path.startswith("/v1/audit/sealed/"):
            ref = path.rsplit("/", 1)[1]
            return httpx.Response(200, json=self.sealed[ref]) if ref in self.sealed else _err(404, "no such content", "not_found")
        return _err(404, "not found", "not_found")

    def _admin(self, request: httpx.Request, path: str) -> httpx.Response:
        parts = path.split("/")[3:]
        if parts == ["users"] and request.method == "GET":
            return httpx.Response(200, json=self.users)
        if parts == ["users"] and request.method == "POST":
            body = json.loads(request.content)
            user = {"id": len(self.users) + 1, "username": body["username"], "role": body["role"], "teams": ["default"],
                    "disabled": False, "must_change_password": True, "created_at": "2026-11-28T00:00:00Z"}
            self.users.append(user)
            otp = None if body.get("password") else f"otp-{uuid.uuid4().hex[:12]}"
            self.passwords[body["username"]] = (body.get("password") or otp, body["role"])
            self.must_change.add(body["username"])
            self.teams[0]["members"].append(body["username"])
            return httpx.Response(201, json={"user": user, "one_time_password": otp})
        if len(parts) == 3 and parts[0] == "users":
            user = next(u for u in self.users if u["username"] == parts[1])
            if parts[2] in ("disable", "enable"):
                user["disabled"] = parts[2] == "disable"
            elif parts[2] == "role":
                user["role"] = json.loads(request.content)["role"]
            return httpx.Response(200, json=user)
        if parts == ["tokens"]:
            return httpx.Response(200, json=self.token_rows)
        if len(parts) == 2 and parts[0] == "tokens" and request.method == "DELETE":
            for t in self.token_rows:
                if t["id"] == int(parts[1]):
                    t["status"], t["revoked_at"] = "revoked", "2026-11-28T00:00:00Z"
            return httpx.Response(204)
        if parts == ["teams"]:
            return httpx.Response(200, json=self.teams)
        if len(parts) == 3 and parts[0] == "teams" and parts[2] == "policy":
            team = next(t for t in self.teams if t["name"] == parts[1])
            team["policy"] = {**(team["policy"] or {}), **json.loads(request.content)}
            return httpx.Response(200, json=team["policy"])
        return _err(404, "not found", "not_found")
