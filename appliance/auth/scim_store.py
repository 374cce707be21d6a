"""SCIM 2.0 provisioning, the storage half: scim2-server's :class:`~scim2_server.storage.ScimStorage`
over the appliance's database, so the protocol (routing, validation with scim2-models, filters,
PATCH, ETags and preconditions, paging, errors) is scim2-server's and only what a resource means
to Enclave is ours (:mod:`appliance.auth.scim_sync`).

Each resource is kept whole (``scim_resources.payload``, scim2-models' dump, minus any password:
the appliance keeps no second password database). A request reads only the rows it needs — by
id, or by ``name_key`` for the ``userName eq``/``displayName eq`` look-ups IdPs make — into a
scim2-server in-memory snapshot that does the filtering, paging, uniqueness and version checks,
then writes back what changed. Every write is collected in :attr:`DatabaseStorage.changes` (old ->
new) for the route to audit in the same transaction. Nothing commits.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    EnterpriseUser,
    ETag,
    Filter,
    Group,
    NotFoundException,
    NotImplementedException,
    Patch,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ResponseParameters,
    ScimProvider,
    SearchRequest,
    ServiceProviderConfig,
    Sort,
    User,
)
from scim2_models.path import CompareOperator, Comparison
from scim2_server.memory import InMemoryStorage
from scim2_server.service import ScimService
from scim2_server.storage import ScimStorage, SearchPage
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from appliance.auth import scim_sync
from appliance.db.identity_models import ScimResource
from appliance.db.models import User as EnclaveUser

__all__ = ["PROVIDER", "SERVICE", "DatabaseStorage", "ScimChange"]

_MAX_RESULTS = 200
CONFIG = ServiceProviderConfig(
    patch=Patch(supported=True),
    bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
    filter=Filter(supported=True, max_results=_MAX_RESULTS),
    change_password=ChangePassword(supported=False),
    sort=Sort(supported=False),
    etag=ETag(supported=True),
    authentication_schemes=[
        AuthenticationScheme(
            type=AuthenticationScheme.Type.oauthbearertoken,
            name="Enclave API token",
            description="An Enclave API token scoped to scim:provision (enclave token create --scope scim:provision)",
        )
    ],
)
# Entra ID and Okta send the enterprise extension (department, manager, employeeNumber...).
_USER = User[EnterpriseUser]
PROVIDER = ScimProvider(
    [User, EnterpriseUser, Group],
    [ResourceType.from_resource(_USER), ResourceType.from_resource(Group)],
    config=CONFIG,
)
SERVICE = ScimService(PROVIDER)
# The attribute whose lower-cased value is a row's name_key, per resource type.
_NAME_ATTRIBUTE = {"User": "userName", "Group": "displayName"}


@dataclass(frozen=True)
class ScimChange:
    action: str
    target: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    effects: dict[str, Any] = field(default_factory=dict)


class _Snapshot(InMemoryStorage):
    """The rows one request reads, served by scim2-server's own in-memory storage."""

    def next_version(self) -> str:
        # Random, not a counter: a snapshot lives for one request, the versions for ever.
        return f'W/"{secrets.token_hex(8)}"'


def _summary(resource_type: str, payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """What an audit record keeps of a resource: its identity and what Enclave acts on."""
    if payload is None:
        return None
    if resource_type == "User":
        return {
            "userName": payload.get("userName"),
            "externalId": payload.get("externalId"),
            "active": payload.get("active", True),
        }
    return {
        "displayName": payload.get("displayName"),
        "externalId": payload.get("externalId"),
        "members": sorted(scim_sync.member_ids(payload)),
    }


class DatabaseStorage(ScimStorage):
    def __init__(self, session: Session, *, now: dt.datetime) -> None:
        self.session = session
        self.now = now
        self.changes: list[ScimChange] = []

    # -- rows <-> resources ----------------------------------------------------------------------

    @staticmethod
    def _model(resource_type: ResourceType) -> type[Resource[Any]]:
        return cast("type[Resource[Any]]", PROVIDER.model_for(resource_type))

    def _resource(self, resource_type: ResourceType, row: ScimResource) -> Resource[Any]:
        return self._model(resource_type).model_validate(row.payload, scim_ctx=Context.DEFAULT)

    def _snapshot(self, resource_type: ResourceType, rows: list[ScimResource]) -> _Snapshot:
        snapshot = _Snapshot(clock=lambda: self.now)
        snapshot.resources = [self._resource(resource_type, row) for row in rows]
        return snapshot

    def _row(self, resource_type: ResourceType, resource_id: str | None) -> ScimResource:
        row = self.session.scalar(
            select(ScimResource).where(
                ScimResource.resource_type == resource_type.name, ScimResource.resource_id == str(resource_id)
            )
        )
        if row is None:
            raise NotFoundException(detail=f"{resource_type.name} {resource_id!r} not found")
        return row

    def _same_name(self, resource_type: ResourceType, key: str) -> list[ScimResource]:
        return list(
            self.session.scalars(
                select(ScimResource).where(
                    ScimResource.resource_type == resource_type.name, ScimResource.name_key == key
                )
            )
        )

    @staticmethod
    def _name_key(resource_type: ResourceType, payload: dict[str, Any]) -> str:
        return str(payload.get(_NAME_ATTRIBUTE.get(str(resource_type.name), ""), "") or "").lower()[:255]

    @staticmethod
    def _dump(resource: Resource[Any]) -> dict[str, Any]:
        if isinstance(resource, User):
            # Write-only, and never ours to keep: holders sign in through the IdP.
            resource.password = None
        return resource.model_dump(scim_ctx=Context.DEFAULT, mode="json")

    # -- ScimStorage -----------------------------------------------------------------------------

    @contextmanager
    def operation(self) -> Iterator[None]:
        with self.session.begin_nested():
            yield

    def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        return self._resource(resource_type, self._row(resource_type, resource_id))

    def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        if len(resource_types) != 1:
            raise NotImplementedException(detail="searching several resource types at once is not supported")
        resource_type = resource_types[0]
        query = select(ScimResource).where(ScimResource.resource_type == resource_type.name)
        key = self._equality_key(resource_type, search_request)
        if key is not None:
            query = query.where(ScimResource.name_key == key)
        rows = list(self.session.scalars(query.order_by(ScimResource.id)))
        return self._snapshot(resource_type, rows).search(resource_types, search_request, position=position)

    @staticmethod
    def _equality_key(resource_type: ResourceType, search_request: SearchRequest[Any]) -> str | None:
        """The name_key a filter ``userName eq "x"`` (``displayName`` for groups) pins, if that is all it says."""
        scim_filter = search_request.filter
        node = scim_filter.ast if scim_filter is not None else None
        if not isinstance(node, Comparison) or node.op != CompareOperator.eq or not isinstance(node.value, str):
            return None
        attribute = str(node.attr_path).rsplit(":", 1)[-1].lower()
        if attribute != _NAME_ATTRIBUTE.get(str(resource_type.name), "").lower():
            return None
        return node.value.lower()[:255]

    def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        payload = self._dump(resource.model_copy(deep=True))
        key = self._name_key(resource_type, payload)
        snapshot = self._snapshot(resource_type, self._same_name(resource_type, key))
        stored = snapshot.create(resource_type, self._model(resource_type).model_validate(payload, scim_ctx=Context.DEFAULT))
        stored_payload = self._dump(stored)
        assert stored.meta is not None and stored.id is not None
        row = ScimResource(
            resource_type=str(resource_type.name),
            resource_id=stored.id,
            name_key=key,
            version=str(stored.meta.version),
            payload=stored_payload,
            user_id=None,
            created_at=self.now,
            updated_at=self.now,
        )
        self.session.add(row)
        self.session.flush()
        self._apply(resource_type, row, None, stored_payload, "created")
        return stored

    def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        row = self._row(resource_type, resource.id)
        old = dict(row.payload)
        payload = self._dump(resource.model_copy(deep=True))
        key = self._name_key(resource_type, payload)
        rows = [row, *(r for r in self._same_name(resource_type, key) if r.id != row.id)]
        snapshot = self._snapshot(resource_type, rows)
        updated = snapshot.update(
            resource_type,
            self._model(resource_type).model_validate(payload, scim_ctx=Context.DEFAULT),
            expected_version=expected_version,
        )
        assert updated.meta is not None
        row.payload = self._dump(updated)
        row.name_key = key
        row.version = str(updated.meta.version)
        row.updated_at = self.now
        self.session.flush()
        self._apply(resource_type, row, old, row.payload, "replaced")
        return updated

    def delete(self, resource_type: ResourceType, resource_id: str, *, expected_version: str | None = None) -> None:
        row = self._row(resource_type, resource_id)
        if expected_version is not None and row.version != expected_version:
            raise PreconditionFailedException
        old = dict(row.payload)
        effects: dict[str, Any] = {}
        if resource_type.name == "User" and row.user_id is not None:
            user = self.session.get(EnclaveUser, row.user_id)
            if user is not None:
                effects[user.username] = scim_sync.deprovision(self.session, user, self.now)
        self.session.execute(delete(ScimResource).where(ScimResource.id == row.id))
        self.session.flush()
        if resource_type.name == "Group":
            effects.update(scim_sync.refresh_memberships(self.session, scim_sync.member_ids(old), now=self.now))
        self._record(resource_type, row.resource_id, "deleted", old, None, effects)

    # -- what it means to Enclave ----------------------------------------------------------------

    def _apply(
        self, resource_type: ResourceType, row: ScimResource, old: dict[str, Any] | None, new: dict[str, Any], verb: str
    ) -> None:
        effects: dict[str, Any] = {}
        if resource_type.name == "User":
            active = new.get("active")
            changes = scim_sync.upsert_user(
                self.session, row, str(new.get("userName") or ""), active is not False, now=self.now
            )
            user = self.session.get(EnclaveUser, row.user_id) if row.user_id is not None else None
            if changes and user is not None:
                effects[user.username] = changes
            if old is None:
                effects.update(scim_sync.refresh_memberships(self.session, [row.resource_id], now=self.now))
            if old is not None and old.get("active", True) is not False and active is False:
                verb = "deactivated"
        else:
            touched = scim_sync.member_ids(new) | (scim_sync.member_ids(old) if old else set())
            effects.update(scim_sync.refresh_memberships(self.session, touched, now=self.now))
        self._record(resource_type, row.resource_id, verb, old, new, effects)

    def _record(
        self,
        resource_type: ResourceType,
        resource_id: str,
        verb: str,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
        effects: dict[str, Any],
    ) -> None:
        name = str(resource_type.name)
        self.changes.append(
            ScimChange(
                action=f"scim.{name.lower()}.{verb}",
                target=f"scim:{name}/{resource_id}",
                old=_summary(name, old),
                new=_summary(name, new),
                effects=effects,
            )
        )
