"""The whole authorization matrix, generated from the route table (issue #12, Done when).

Every operation in ``/openapi.json`` is tried with every kind of credential: none, each role's full
token, a token narrowed to each single scope, an expired token, a revoked one and a disabled user's.
What a route needs comes from the route itself (the ``permission`` its ``caller_with`` dependency
carries), so a new route is in the matrix the moment it exists; one that asks for no credential
must be listed in :data:`PUBLIC` or the test fails.

Requests carry an empty body and path values naming nothing, so an allowed call answers 404/422
(or 200 for a read) and changes nothing; the matrix checks only the 401/403 decision.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from appliance.auth import admin as ops
from appliance.auth import tokens as token_ops
from appliance.auth.roles import ROLE_PERMISSIONS, Permission, Role, permissions_for
from tests.appliance.api.conftest import T0, Appliance

# Routes anyone may call without a token (probes, the scraper, sign-in itself, the schema).
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/v1/auth/login"),
    # Which sign-ins are offered, asked before anyone can hold a token (names hosts, nothing secret).
    ("GET", "/v1/auth/methods"),
    # Single sign-on begins and ends without an Enclave credential: the IdP's code is the credential.
    ("POST", "/v1/auth/oidc/start"),
    ("POST", "/v1/auth/oidc/callback"),
    # The directory's password is the credential (throttled and audited like /v1/auth/login).
    ("POST", "/v1/auth/ldap/login"),
}
_NO_PERMISSION = object()

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True)
class Credential:
    label: str
    token: str | None
    # None: the credential itself is refused (401 on every protected route).
    permissions: frozenset[Permission] | None


def _required(route: APIRoute) -> object:
    """The permission the route's ``caller_with`` dependency asks for (None: any valid token)."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        found = getattr(dep.call, "permission", _NO_PERMISSION)
        if found is not _NO_PERMISSION:
            return found
        stack.extend(dep.dependencies)
    return _NO_PERMISSION


def _credentials(appliance: Appliance) -> list[Credential]:
    creds = [Credential("no token", None, None)]
    owner = {"dev": Role.DEVELOPER, "aud": Role.AUDITOR, "adm": Role.ADMIN}
    for who, role in owner.items():
        creds.append(Credential(f"{role.value} token", appliance.tokens[who], permissions_for(role)))
    with appliance.uow() as session:
        for perm in Permission:
            who = next(w for w, r in owner.items() if perm in ROLE_PERMISSIONS[r])
            user = ops.get_user(session, who)
            raw, _, _ = token_ops.create_token(
                session, user.id, name=f"only {perm.value}", expires_in=dt.timedelta(days=7), now=T0, scopes=[perm]
            )
            creds.append(Credential(f"{who} scoped to {perm.value}", raw, frozenset({perm})))
        adm = ops.get_user(session, "adm")
        expired, _, _ = token_ops.create_token(
            session, adm.id, name="old", expires_in=dt.timedelta(days=1), now=T0 - dt.timedelta(days=2)
        )
        revoked, info, _ = token_ops.create_token(session, adm.id, name="gone", expires_in=dt.timedelta(days=7), now=T0)
        token_ops.revoke_token(session, info.id, now=T0)
        ops.create_user(session, "leaver", role="admin", now=T0, password="quartz-lantern-meadow-7319")
        leaver = ops.get_user(session, "leaver")
        disabled, _, _ = token_ops.create_token(session, leaver.id, name="t", expires_in=dt.timedelta(days=7), now=T0)
        ops.disable_user(session, "leaver", now=T0)
    creds += [
        Credential("expired token", expired, None),
        Credential("revoked token", revoked, None),
        Credential("disabled user's token", disabled, None),
    ]
    return creds


def _concrete(path: str) -> str:
    # Ids no row has and names no user, team or model has: an allowed call finds nothing to change.
    return re.sub(r"\{([^}]+)\}", lambda m: "999999999" if m.group(1).endswith("id") else "zz-nobody", path)


def _flatten(routes: list[Any]) -> list[APIRoute]:
    flat: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            flat.append(route)
        elif (included := getattr(route, "original_router", None)) is not None:
            # FastAPI >= 0.165 keeps an included router whole; the app includes ours with no prefix.
            flat.extend(_flatten(list(included.routes)))
    return flat


def _routes(appliance: Appliance) -> dict[tuple[str, str], APIRoute]:
    # The document writes {model_id} where the route says {model_id:path}.
    return {
        (m, re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path)): r
        for r in _flatten(list(appliance.app.routes))
        for m in r.methods or ()
    }


async def test_every_route_decides_every_credential(appliance: Appliance, client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    operations = [(m.upper(), p) for p, item in document["paths"].items() for m in item if m != "parameters"]
    assert len(operations) >= 30  # the document is the appliance's, not an empty one
    table = _routes(appliance)
    creds = _credentials(appliance)
    wrong: list[str] = []
    for method, path in operations:
        route = table.get((method, path))
        assert route is not None, f"{method} {path} is in /openapi.json but not in the route table"
        needed = _required(route)
        if needed is _NO_PERMISSION:
            assert (method, path) in PUBLIC, f"{method} {path} asks for no credential and is not listed as public"
        for cred in creds:
            headers = {"Authorization": f"Bearer {cred.token}"} if cred.token else {}
            body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
            r = await client.request(method, _concrete(path), json=body, headers=headers)
            if needed is _NO_PERMISSION:
                ok = r.status_code not in (401, 403)
                expect = "not 401/403"
            elif cred.permissions is None:
                ok, expect = r.status_code == 401, "401"
            elif (method, path) == ("POST", "/v1/auth/logout"):
                # Any valid token passes the gate; only a login session can then be ended.
                ok = r.status_code == 401 and "not a login session token" in r.text
                expect = "401 not a login session token"
            elif needed is None or needed in cred.permissions:
                ok, expect = r.status_code not in (401, 403), "not 401/403"
            else:
                ok, expect = r.status_code == 403, "403"
            if not ok:
                wrong.append(f"{method} {path} with {cred.label}: {r.status_code} (expected {expect}) {r.text[:120]}")
    assert not wrong, f"{len(wrong)} wrong decisions:\n" + "\n".join(wrong)
    # Every refusal of a credential that was presented is audited.
    assert appliance.records("authz.denied") and appliance.records("auth.token.rejected")
