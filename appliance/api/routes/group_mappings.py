"""The group mapping under ``/v1/admin/group-mappings``: which IdP group (OIDC ``groups`` claim,
LDAP group, SCIM Group) grants which team and at least which role — the same table
``enclave group-map`` edits. Each change is audited (``admin.group_mapping.added`` / ``.removed``,
old -> new) in its own transaction; it applies at each user's next sign-in or session refresh, and
for SCIM-provisioned users at the IdP's next change of their groups.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from appliance.api.auditing import Caller
from appliance.api.routes.admin import _RESPONSES, _change, _read
from appliance.api.state import MAX_ID, caller_with
from appliance.auth import groups
from appliance.auth.change import Change
from appliance.auth.roles import Permission
from shared.errors import InputError

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin/group-mappings", tags=["admin"])
_teams = caller_with(Permission.TEAMS_MANAGE)
Source = Literal["oidc", "ldap", "scim"]


class GroupMappingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: Source
    group: str = Field(min_length=1, max_length=255, description="the group's name (LDAP: its cn or full DN)")
    team: str = Field(min_length=1, max_length=64)
    role: Literal["developer", "auditor", "admin"] = "developer"


class GroupMappingOut(BaseModel):
    id: int
    source: str
    group: str
    team: str
    role: str


def _out(m: groups.MappingInfo) -> GroupMappingOut:
    return GroupMappingOut(id=m.id, source=m.source, group=m.group, team=m.team, role=m.role)


@router.get("", response_model=list[GroupMappingOut], responses=_RESPONSES, summary="Every IdP group -> team/role mapping")
async def list_mappings(
    request: Request, source: Source | None = Query(default=None), caller: Caller = Depends(_teams)
) -> list[GroupMappingOut]:
    unknown = sorted(set(request.query_params) - {"source"})
    if unknown:
        raise InputError(f"{unknown[0]}: this parameter is not supported by this appliance")
    return await _read(request, lambda session: [_out(m) for m in groups.list_mappings(session, source)])


@router.post(
    "", response_model=GroupMappingOut, status_code=201, responses=_RESPONSES, summary="Map an IdP group to a team and role"
)
async def add_mapping(body: GroupMappingIn, request: Request, caller: Caller = Depends(_teams)) -> GroupMappingOut:
    def op(session: Session, now: dt.datetime) -> tuple[Change, GroupMappingOut]:
        change = groups.add_mapping(session, body.source, body.group, body.team, body.role, now=now)
        made = next(m for m in groups.list_mappings(session) if m.id == change.target_id)
        return change, _out(made)

    return await _change(request, caller, op)


@router.delete(
    "/{mapping_id}", status_code=204, response_class=Response, responses=_RESPONSES, summary="Remove a group mapping"
)
async def remove_mapping(
    request: Request, mapping_id: int = Path(ge=1, le=MAX_ID), caller: Caller = Depends(_teams)
) -> Response:
    def op(session: Session, now: dt.datetime) -> tuple[Change, None]:
        return groups.remove_mapping(session, mapping_id), None

    await _change(request, caller, op)
    return Response(status_code=204)
