"""SCIM 2.0 (RFC 7643/7644) under ``/scim/v2``: ``/Users``, ``/Groups``, ``/ServiceProviderConfig``,
``/ResourceTypes``, ``/Schemas`` — served by scim2-server's handler over
:class:`appliance.auth.scim_store.DatabaseStorage`, behind a bearer token holding
``scim:provision`` (give the IdP a token scoped to that alone).

One request is one transaction: the storage's changes and their audit records (``scim.user.created``,
``scim.user.deactivated``, ``scim.group.replaced``... with old -> new and what each did to Enclave
accounts) commit together; a SCIM error rolls the request back. Errors, authentication's included,
are SCIM error messages (``application/scim+json``; see appliance.api.errors).
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Path, Request, Response
from scim2_models import SCIMException
from scim2_server.handler import ScimHandler
from scim2_server.requests import ScimRequest
from scim2_server.responses import SCIM_MEDIA_TYPE, ScimResponse

from appliance.api.auditing import Caller, RequestInfo
from appliance.api.state import AppState, app_state, caller_with, request_info
from appliance.audit.events import AuditEvent
from appliance.auth.roles import Permission
from appliance.auth.scim_store import SERVICE, DatabaseStorage

__all__ = ["PREFIX", "router"]

PREFIX = "/scim/v2"
router = APIRouter(prefix=PREFIX, tags=["scim"])

_SCIM_BODY: dict[str, Any] = {"content": {SCIM_MEDIA_TYPE: {"schema": {"type": "object"}}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "A SCIM resource or list (RFC 7644 3.4)", **_SCIM_BODY},
    "default": {"description": "A SCIM error message (RFC 7644 3.12), or 201/204 as RFC 7644 says", **_SCIM_BODY},
}


class ScimJSONResponse(Response):
    media_type = SCIM_MEDIA_TYPE


def _handle(state: AppState, scim_request: ScimRequest, caller: Caller, info: RequestInfo) -> ScimResponse:
    with state.uow() as session:
        storage = DatabaseStorage(session, now=state.clock.now())
        try:
            response = ScimHandler(SERVICE, storage).handle(scim_request)
        except SCIMException as exc:
            session.rollback()
            return SERVICE.error_response(exc)
        for change in storage.changes:
            state.audit_log.append_in(
                session,
                AuditEvent(
                    action=change.action,
                    actor=caller.actor,
                    target=change.target,
                    request_id=info.request_id,
                    client_address=info.client_address,
                    details={"old": change.old, "new": change.new, "effects": change.effects},
                ),
            )
    return response


async def _serve(request: Request, caller: Caller) -> Response:
    state = app_state(request)
    info = request_info(request)
    scim_request = ScimRequest(
        method=request.method,
        base_url=str(request.base_url).rstrip("/") + PREFIX,
        path=request.url.path.removeprefix(PREFIX) or "/",
        query=dict(request.query_params),
        headers=list(request.headers.items()),
        body=await request.body(),
        subject=caller,
    )
    done = await anyio.to_thread.run_sync(_handle, state, scim_request, caller, info)
    content = json.dumps(done.body).encode() if done.body is not None else b""
    headers = {k: v for k, v in done.headers.items() if k.lower() != "content-type"}
    return ScimJSONResponse(content=content, status_code=int(done.status), headers=headers)


_SCIM = caller_with(Permission.SCIM_PROVISION)
# Each documented operation, then one hidden route for everything else under /scim/v2, so an unknown
# path or method gets scim2-server's SCIM 404/405 rather than the API's own.
_OPERATIONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("/ServiceProviderConfig", ("GET",), "SCIM: what this service provider supports"),
    ("/ResourceTypes", ("GET",), "SCIM: the resource types (User, Group)"),
    ("/ResourceTypes/{resource_id}", ("GET",), "SCIM: one resource type"),
    ("/Schemas", ("GET",), "SCIM: the schemas"),
    ("/Schemas/{resource_id}", ("GET",), "SCIM: one schema"),
    ("/Users", ("GET", "POST"), "SCIM: list (filter, paging) or provision users"),
    ("/Users/{resource_id}", ("GET", "PUT", "PATCH", "DELETE"), "SCIM: one user; active=false or DELETE deprovisions"),
    ("/Groups", ("GET", "POST"), "SCIM: list or create groups"),
    ("/Groups/{resource_id}", ("GET", "PUT", "PATCH", "DELETE"), "SCIM: one group; members map to teams and roles"),
)


async def _collection(request: Request, caller: Caller = Depends(_SCIM)) -> Response:
    return await _serve(request, caller)


async def _one(
    request: Request,
    resource_id: str = Path(min_length=1, max_length=255),
    caller: Caller = Depends(_SCIM),
) -> Response:
    # The handler reads the id from the path itself.
    return await _serve(request, caller)


for _path, _methods, _summary in _OPERATIONS:
    for _method in _methods:
        router.add_api_route(
            _path,
            _one if "{resource_id}" in _path else _collection,
            methods=[_method],
            summary=_summary,
            response_class=ScimJSONResponse,
            responses=_RESPONSES,
            name=f"scim_{_method.lower()}_{_path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
        )

router.add_api_route(
    "/{rest:path}",
    _collection,
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
    response_class=ScimJSONResponse,
)
