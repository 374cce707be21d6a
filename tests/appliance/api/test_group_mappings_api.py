"""The admin API for IdP group -> team/role mappings: add, list (by source), remove; refusals with a
clear 4xx; each change audited old -> new."""

from __future__ import annotations

import httpx
import pytest

from tests.appliance.api.conftest import Appliance

pytestmark = pytest.mark.anyio

URL = "/v1/admin/group-mappings"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_add_list_remove_audited(appliance: Appliance, client: httpx.AsyncClient) -> None:
    adm = appliance.headers("adm")
    made = await client.post(URL, json={"source": "ldap", "group": "eng", "team": "default", "role": "auditor"}, headers=adm)
    assert made.status_code == 201, made.text
    mapping = made.json()
    assert (mapping["source"], mapping["group"], mapping["team"], mapping["role"]) == ("ldap", "eng", "default", "auditor")
    await client.post(URL, json={"source": "scim", "group": "Engineering", "team": "default"}, headers=adm)
    assert [m["group"] for m in (await client.get(URL, headers=adm)).json()] == ["eng", "Engineering"]
    assert [m["group"] for m in (await client.get(URL, params={"source": "scim"}, headers=adm)).json()] == ["Engineering"]
    again = await client.post(URL, json={"source": "ldap", "group": "eng", "team": "default"}, headers=adm)
    assert again.status_code == 409
    gone = await client.delete(f"{URL}/{mapping['id']}", headers=adm)
    assert gone.status_code == 204
    assert (await client.delete(f"{URL}/{mapping['id']}", headers=adm)).status_code == 404
    added = appliance.records("admin.group_mapping.added")[0]
    assert added["actor"] == "adm" and added["details"]["new"]["group"] == "eng"  # type: ignore[index]
    removed = appliance.records("admin.group_mapping.removed")[0]
    assert removed["details"]["old"]["role"] == "auditor" and removed["details"]["new"] is None  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"source": "saml", "group": "eng", "team": "default"}, 400, "source"),
        ({"source": "oidc", "group": "eng", "team": "nobody"}, 404, "no team named"),
        ({"source": "oidc", "group": "eng", "team": "default", "role": "root"}, 400, "role"),
        ({"source": "oidc", "group": "eng", "team": "default", "extra": 1}, 400, "extra"),
    ],
)
async def test_bad_mappings_are_refused(
    appliance: Appliance, client: httpx.AsyncClient, body: dict[str, object], status: int, words: str
) -> None:
    r = await client.post(URL, json=body, headers=appliance.headers("adm"))
    assert r.status_code == status and words in r.json()["error"]["message"], r.text
