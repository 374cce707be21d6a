"""LDAP sign-in end to end against a real OpenLDAP ``slapd`` (LDAPS and StartTLS, the site CA
checked, anonymous binds disallowed by the directory too): the service account finds the user,
the user's own bind checks the password, ``memberOf`` (or a group search) maps to teams and a
role; a wrong password is throttled and audited like a local one; a user outside the mapped groups
is refused; a user removed from a group loses it at the next sign-in."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from appliance.auth import groups
from appliance.auth import throttle as throttle_rules
from appliance.auth import tokens as token_ops
from appliance.auth.ldap import LdapDirectory
from appliance.db.models import User
from shared.errors import AuthError, UpstreamError
from tests.appliance.api.conftest import PASSWORD, T0, Appliance, build_appliance
from tests.helpers.desktop_tls import make_ca
from tests.helpers.ldap_directory import BASE_DN, SERVICE_DN, SERVICE_PASSWORD, Slapd, find_slapd

pytestmark = pytest.mark.anyio

USERS = {"alice": "alice-directory-pw-1", "bob": "bob-directory-pw-2", "carol": "carol-directory-pw-3"}
GROUPS = {"eng": ["alice", "carol"], "staff": ["alice", "bob", "carol"], "enclave-admins": ["carol"]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    slapd = find_slapd()
    if slapd is None:
        pytest.skip("OpenLDAP is needed: apt-get install slapd ldap-utils (.ci/run does)")
    server = Slapd(slapd, tmp_path_factory.mktemp("slapd"), users=USERS, groups=GROUPS)
    try:
        yield server
    finally:
        server.close()


def _settings(directory: Slapd, *, starttls: bool = False, group_search: bool = False) -> dict[str, object]:
    return {
        "ldap_url": directory.ldap_url if starttls else directory.ldaps_url,
        "ldap_starttls": starttls,
        "ldap_ca_file": str(directory.ca_file),
        "ldap_bind_dn": SERVICE_DN,
        "ldap_bind_password": SERVICE_PASSWORD,
        "ldap_user_base": f"ou=people,{BASE_DN}",
        "ldap_user_filter": "(&(objectClass=inetOrgPerson)(uid={username}))",
        "ldap_group_base": f"ou=groups,{BASE_DN}" if group_search else "",
    }


@pytest.fixture
async def site(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_url: str, directory: Slapd
) -> AsyncIterator[tuple[Appliance, httpx.AsyncClient]]:
    # LDAPS unless a test asks for StartTLS or groups found by a search instead of memberOf.
    mode = getattr(request, "param", "ldaps")
    app = build_appliance(
        tmp_path, sqlite_url, **_settings(directory, starttls=mode == "starttls", group_search=mode == "group-search")
    )
    with app.uow() as session:
        groups.add_mapping(session, "ldap", "eng", "default", "developer", now=T0)
        # By full DN: both forms are offered to the mapping.
        groups.add_mapping(session, "ldap", directory.group_dn("enclave-admins"), "default", "admin", now=T0)
    transport = httpx.ASGITransport(app=app.app, client=("127.0.0.1", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client
    finally:
        app.close()


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/v1/auth/ldap/login", json={"username": username, "password": password})


@pytest.mark.parametrize("site", ["ldaps", "starttls", "group-search"], indirect=True)
async def test_directory_user_signs_in_with_mapped_team_and_role(site: tuple[Appliance, httpx.AsyncClient]) -> None:
    app, client = site
    done = await _login(client, "Alice", USERS["alice"])
    assert done.status_code == 200, done.text
    me = (await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {done.json()['token']}"})).json()
    assert (me["username"], me["role"], me["teams"], me["credential"]) == ("alice", "developer", ["default"], "session")
    record = app.records("auth.ldap.login")[-1]
    assert record["actor"] == "alice" and record["details"]["created"] is True  # type: ignore[index]
    assert "eng" in record["details"]["groups"]  # type: ignore[index]
    # The highest mapped role wins; the account is linked, not recreated, on the next sign-in.
    carol = await _login(client, "carol", USERS["carol"])
    me = (await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {carol.json()['token']}"})).json()
    assert me["role"] == "admin"
    again = await _login(client, "alice", USERS["alice"])
    assert again.status_code == 200 and app.records("auth.ldap.login")[-1]["details"]["created"] is False  # type: ignore[index]


async def test_wrong_password_is_refused_throttled_and_audited_like_a_local_one(
    site: tuple[Appliance, httpx.AsyncClient],
) -> None:
    app, client = site
    local = await client.post("/v1/auth/login", json={"username": "dev", "password": PASSWORD + "x"})
    wrong = await _login(client, "alice", "not-alices-password")
    unknown = await _login(client, "nobody", "whatever-password")
    assert wrong.status_code == unknown.status_code == local.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"] == local.json()["error"]["message"]
    reasons = [r["details"]["reason"] for r in app.records("auth.ldap.failed")]  # type: ignore[index]
    assert reasons == ["bad_password", "unknown_user"]
    for _ in range(throttle_rules.FREE_ATTEMPTS - 1):
        assert (await _login(client, "alice", "not-alices-password")).status_code == 401
    # Even the right password now waits: the throttle refuses before the directory is asked.
    throttled = await _login(client, "alice", USERS["alice"])
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    app.clock.advance(throttle_rules.MAX_BACKOFF_S)
    assert (await _login(client, "alice", USERS["alice"])).status_code == 200


async def test_user_outside_the_mapped_groups_is_refused(site: tuple[Appliance, httpx.AsyncClient]) -> None:
    app, client = site
    refused = await _login(client, "bob", USERS["bob"])
    assert refused.status_code == 401
    assert "groups" in refused.json()["error"]["message"]
    assert app.records("auth.ldap.failed")[-1]["details"]["reason"] == "no_group"  # type: ignore[index]
    adm = await client.get("/v1/admin/users", headers=app.headers("adm"))
    assert "bob" not in {u["username"] for u in adm.json()}


async def test_removed_from_group_loses_access_at_next_sign_in(
    site: tuple[Appliance, httpx.AsyncClient], directory: Slapd
) -> None:
    app, client = site
    assert (await _login(client, "carol", USERS["carol"])).status_code == 200
    directory.remove_member("enclave-admins", "carol")
    try:
        again = await _login(client, "carol", USERS["carol"])
        me = (await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {again.json()['token']}"})).json()
        assert me["role"] == "developer"
        changes = app.records("auth.ldap.login")[-1]["details"]["changes"]  # type: ignore[index]
        assert changes["role"] == {"old": "admin", "new": "developer"}  # type: ignore[index]
    finally:
        directory.add_member("enclave-admins", "carol")


def test_directory_certificate_is_checked_against_the_site_ca(directory: Slapd, tmp_path: Path) -> None:
    other = make_ca("Some other CA").write(tmp_path / "other.pem")
    settings = _settings(directory)
    untrusted = LdapDirectory(
        url=str(settings["ldap_url"]),
        starttls=False,
        ca_file=str(other),
        bind_dn=SERVICE_DN,
        bind_password=SERVICE_PASSWORD,
        user_base=f"ou=people,{BASE_DN}",
        user_filter="(uid={username})",
        group_base="",
        group_filter="",
        timeout_s=5,
    )
    with pytest.raises(UpstreamError, match="unreachable"):
        untrusted.authenticate("alice", USERS["alice"])


def test_no_unauthenticated_bind(directory: Slapd) -> None:
    settings = _settings(directory)
    trusted = LdapDirectory(
        url=str(settings["ldap_url"]),
        starttls=False,
        ca_file=str(directory.ca_file),
        bind_dn=SERVICE_DN,
        bind_password=SERVICE_PASSWORD,
        user_base=f"ou=people,{BASE_DN}",
        user_filter="(uid={username})",
        group_base="",
        group_filter="",
        timeout_s=5,
    )
    # A name with no password would be an unauthenticated bind (RFC 4513 5.1.2): never sent.
    with pytest.raises(AuthError) as refused:
        trusted.authenticate("alice", "")
    assert refused.value.reason == "bad_password"
    # Nor does the service account ever bind without its password.
    no_secret = LdapDirectory(
        url=str(settings["ldap_url"]), starttls=False, ca_file=str(directory.ca_file), bind_dn=SERVICE_DN,
        bind_password="", user_base=f"ou=people,{BASE_DN}", user_filter="(uid={username})", group_base="",
        group_filter="", timeout_s=5,
    )
    with pytest.raises(UpstreamError, match="ldap_bind_password"):
        no_secret.authenticate("alice", USERS["alice"])
    # A filter-injection attempt finds no one rather than everyone.
    with pytest.raises(AuthError) as injected:
        trusted.authenticate("*)(uid=*", "anything")
    assert injected.value.reason == "unknown_user"


async def test_first_sign_in_links_to_the_account_scim_provisioned(site: tuple[Appliance, httpx.AsyncClient]) -> None:
    app, client = site
    with app.uow() as session:
        adm = session.scalar(select(User).where(User.username == "adm"))
        assert adm is not None
        scim_token, _, _ = token_ops.create_token(
            session, adm.id, name="idp", expires_in=dt.timedelta(days=7), now=T0, scopes=["scim:provision"]
        )
    provisioned = await client.post(
        "/scim/v2/Users",
        json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice@example.test"},
        headers={"Authorization": f"Bearer {scim_token}", "Content-Type": "application/scim+json"},
    )
    assert provisioned.status_code == 201, provisioned.text
    done = await _login(client, "alice", USERS["alice"])
    assert done.status_code == 200, done.text
    assert app.records("auth.ldap.login")[-1]["details"]["created"] is False  # type: ignore[index]
    users = (await client.get("/v1/admin/users", headers=app.headers("adm"))).json()
    assert [u["username"] for u in users].count("alice") == 1


async def test_session_refresh_re_evaluates_directory_groups(
    site: tuple[Appliance, httpx.AsyncClient], directory: Slapd
) -> None:
    app, client = site
    token = (await _login(client, "carol", USERS["carol"])).json()["token"]
    directory.remove_member("enclave-admins", "carol")
    try:
        renewed = await client.post("/v1/auth/refresh", headers={"Authorization": f"Bearer {token}"})
        assert renewed.status_code == 200, renewed.text
        new = renewed.json()["token"]
        assert (await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})).status_code == 401
        me = (await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {new}"})).json()
        assert me["role"] == "developer"
        changes = app.records("auth.session.refreshed")[-1]["details"]["changes"]  # type: ignore[index]
        assert changes["role"] == {"old": "admin", "new": "developer"}  # type: ignore[index]
        # Out of every mapped group: the refresh is refused and the session it held ends.
        directory.remove_member("eng", "carol")
        try:
            refused = await client.post("/v1/auth/refresh", headers={"Authorization": f"Bearer {new}"})
            assert refused.status_code == 401 and "groups" in refused.json()["error"]["message"]
            assert (await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {new}"})).status_code == 401
            assert app.records("auth.session.refresh_failed")[-1]["details"]["reason"] == "no_group"  # type: ignore[index]
        finally:
            directory.add_member("eng", "carol")
    finally:
        directory.add_member("enclave-admins", "carol")


async def test_refresh_of_a_local_session_and_of_an_api_token(site: tuple[Appliance, httpx.AsyncClient]) -> None:
    app, client = site
    session = await client.post("/v1/auth/login", json={"username": "dev", "password": PASSWORD})
    renewed = await client.post("/v1/auth/refresh", headers={"Authorization": f"Bearer {session.json()['token']}"})
    assert renewed.status_code == 200, renewed.text
    token = await client.post("/v1/auth/refresh", headers=app.headers("dev"))
    assert token.status_code == 409 and "API token" in token.json()["error"]["message"]
