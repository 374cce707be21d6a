"""SCIM 2.0 provisioning end to end against the live appliance (uvicorn on loopback): scim2-tester's
whole compliance run; the flows Okta and Entra ID send (create, group membership by PATCH
add/replace/remove, filter by userName, deactivate, DELETE); deprovisioning revokes every token
and session at once, so the user's next request is a 401; every change audited old -> new."""

from __future__ import annotations

import collections
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scim2_models import ScimProvider
from scim2_tester import Status, check_server

from appliance.auth import admin as ops
from appliance.auth import groups
from appliance.auth import tokens as token_ops
from tests.appliance.api.conftest import T0, Appliance, build_appliance
from tests.helpers.live_server import live_server
from tests.helpers.scim_client import HttpxScimClient

SCIM = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


class Site:
    def __init__(self, app: Appliance, url: str, scim_token: str) -> None:
        self.app = app
        self.api = httpx.Client(base_url=url, timeout=30)
        self.scim = httpx.Client(
            base_url=f"{url}/scim/v2", timeout=30, headers={"Authorization": f"Bearer {scim_token}", "Content-Type": SCIM}
        )

    def user(self, user_name: str, **extra: Any) -> dict[str, Any]:
        r = self.scim.post("/Users", json={"schemas": [USER_SCHEMA], "userName": user_name, "active": True, **extra})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def patch(self, path: str, *operations: dict[str, Any], **headers: str) -> httpx.Response:
        return self.scim.patch(path, json={"schemas": [PATCH_SCHEMA], "Operations": list(operations)}, headers=headers)

    def token_for(self, username: str) -> str:
        """The token the user would make for their laptop after signing in through the IdP."""
        with self.app.uow() as session:
            user = ops.get_user(session, username)
            raw, _, _ = token_ops.create_token(
                session, user.id, name="laptop", expires_in=dt.timedelta(days=7), now=self.app.clock.now()
            )
        return raw

    def me(self, token: str) -> httpx.Response:
        return self.api.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    # Both backends: the storage's JSON rows, savepoints and look-ups are the database's.
    app = build_appliance(tmp_path, db_url)
    with app.uow() as session:
        ops.create_team(session, "platform", now=T0)
        groups.add_mapping(session, "scim", "Engineering", "default", "developer", now=T0)
        groups.add_mapping(session, "scim", "Platform", "platform", "developer", now=T0)
        # The IdP's credential: an admin's token narrowed to SCIM alone.
        raw, _, _ = token_ops.create_token(
            session, ops.get_user(session, "adm").id, name="idp", expires_in=dt.timedelta(days=30), now=T0,
            scopes=["scim:provision"],
        )
    try:
        with live_server(app.app) as url:
            s = Site(app, url, raw)
            yield s
            s.api.close()
            s.scim.close()
    finally:
        app.close()


def test_scim2_tester_reports_no_failed_check(site: Site) -> None:
    http = httpx.Client(base_url=f"{site.scim.base_url}/", headers=dict(site.scim.headers), timeout=30)
    with http:
        results = check_server(HttpxScimClient(http, provider=ScimProvider()), raise_exceptions=False)
    ran = collections.Counter((r.title, r.status.name) for r in results)
    print("scim2-tester checks:", dict(sorted(ran.items())))
    failed = [f"{r.title} {r.resource_type or ''}: {r.reason}" for r in results if r.status == Status.ERROR]
    assert not failed, "\n".join(failed)
    titles = {r.title for r in results}
    # Discovery, CRUD and PATCH all ran (not skipped wholesale).
    assert {"service_provider_config_endpoint", "object_creation", "object_replacement", "object_deletion",
            "check_add_attribute", "check_remove_attribute", "check_replace_attribute"} <= titles
    assert sum(r.status == Status.SUCCESS for r in results) > 100


def test_create_generate_deactivate_refuses_the_next_request(site: Site) -> None:
    created = site.user("Ada.Lovelace@example.com", externalId="00u1", name={"givenName": "Ada", "familyName": "Lovelace"})
    group = site.scim.post(
        "/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "Engineering", "members": [{"value": created["id"]}]}
    )
    assert group.status_code == 201, group.text
    token = site.token_for("ada.lovelace")
    chat = site.api.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert chat.status_code == 200, chat.text
    deactivated = site.patch(f"/Users/{created['id']}", {"op": "replace", "value": {"active": False}})
    # RFC 7644 3.5.2: 204 when the client asked for no attributes back.
    assert deactivated.status_code == 204, deactivated.text
    t0 = time.perf_counter()
    refused = site.me(token)
    elapsed = time.perf_counter() - t0
    assert refused.status_code == 401
    assert site.scim.get(f"/Users/{created['id']}").json()["active"] is False
    print(f"deactivation -> refusal: next request refused {elapsed * 1000:.1f} ms after the PATCH answered")
    record = site.app.records("scim.user.deactivated")[-1]
    assert record["details"]["old"]["active"] is True and record["details"]["new"]["active"] is False  # type: ignore[index]
    assert record["details"]["effects"]["ada.lovelace"]["tokens_revoked"] == 1  # type: ignore[index]
    assert record["actor"] == "adm"


def test_okta_and_entra_group_flows_map_teams(site: Site) -> None:
    ada = site.user("ada@example.com")
    bob = site.user("bob@example.com")
    found = site.scim.get("/Users", params={"filter": 'userName eq "ADA@example.com"'}).json()
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == ada["id"]
    group = site.scim.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "Platform", "members": []}).json()
    gid = group["id"]
    ada_token, bob_token = site.token_for("ada"), site.token_for("bob")
    # Okta: add members.
    added = site.patch(f"/Groups/{gid}", {"op": "add", "path": "members", "value": [{"value": ada["id"]}, {"value": bob["id"]}]})
    assert added.status_code == 204, added.text
    assert site.me(ada_token).json()["teams"] == ["platform"]
    # Entra ID: remove one member by filter path.
    removed = site.patch(f"/Groups/{gid}", {"op": "remove", "path": f'members[value eq "{bob["id"]}"]'})
    assert removed.status_code == 204, removed.text
    assert site.me(bob_token).json()["teams"] == [] and site.me(ada_token).json()["teams"] == ["platform"]
    # Replace the whole member list, with the ETag the last answer carried.
    etag = removed.headers["ETag"]
    stale = site.patch(f"/Groups/{gid}", {"op": "replace", "path": "members", "value": [{"value": bob["id"]}]},
                       **{"If-Match": group["meta"]["version"]})
    assert stale.status_code == 412
    replaced = site.patch(f"/Groups/{gid}", {"op": "replace", "path": "members", "value": [{"value": bob["id"]}]},
                          **{"If-Match": etag})
    assert replaced.status_code == 204, replaced.text
    assert site.me(bob_token).json()["teams"] == ["platform"] and site.me(ada_token).json()["teams"] == []
    change = site.app.records("scim.group.replaced")[-1]["details"]
    assert change["old"]["members"] == [ada["id"]] and change["new"]["members"] == [bob["id"]]  # type: ignore[index]
    # DELETE deprovisions too, and the resource is gone.
    assert site.scim.delete(f"/Users/{bob['id']}").status_code == 204
    assert site.scim.get(f"/Users/{bob['id']}").status_code == 404
    assert site.me(bob_token).status_code == 401


def test_scim_answers_scim_errors_and_needs_its_scope(site: Site) -> None:
    anonymous = httpx.get(f"{site.scim.base_url}/Users")
    assert anonymous.status_code == 401 and anonymous.headers["content-type"].startswith(SCIM)
    assert anonymous.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    developer = httpx.get(f"{site.scim.base_url}/Users", headers=site.app.headers("dev"))
    assert developer.status_code == 403 and "scim:provision" in developer.json()["detail"]
    bad_filter = site.scim.get("/Users", params={"filter": "userName eq"})
    assert bad_filter.status_code == 400 and bad_filter.json()["scimType"] == "invalidFilter"
    site.user("carol")
    taken = site.scim.post("/Users", json={"schemas": [USER_SCHEMA], "userName": "CAROL"})
    assert taken.status_code == 409 and taken.json()["scimType"] == "uniqueness"
    # No password is kept: holders sign in through the IdP.
    with_password = site.user("dave", password="Hunter2-but-longer")
    assert "password" not in site.scim.get(f"/Users/{with_password['id']}").json()
