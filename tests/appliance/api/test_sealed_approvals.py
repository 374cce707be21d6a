"""Two-person reads of sealed content (issue 12, item 6): with ``sealed_read_approvals = 2`` an
auditor reads a sealed ref only after a second auditor approved their request, once, and the
read's audit record names both."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.audit.approvals import REQUEST_TTL
from appliance.auth import admin as ops
from appliance.auth import tokens as token_ops
from appliance.config import load_settings
from shared.errors import ConfigError
from tests.appliance.api.conftest import PASSWORD, T0, Appliance, build_appliance

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def two_person(tmp_path: Path, sqlite_url: str) -> Any:
    a = build_appliance(tmp_path, sqlite_url, policy={"capture_mode": "sealed"}, sealed_read_approvals=2)
    with a.uow() as session:
        ops.create_user(session, "aud2", role="auditor", now=T0, password=PASSWORD)
        raw, _, _ = token_ops.create_token(
            session, ops.get_user(session, "aud2").id, name="t", expires_in=dt.timedelta(days=30), now=T0
        )
        a.tokens["aud2"] = raw
    try:
        yield a
    finally:
        a.close()


async def _sealed_ref(a: Appliance, client: httpx.AsyncClient) -> str:
    body = {"model": "fake-model", "prompt": "secret plan", "max_tokens": 2}
    assert (await client.post("/v1/completions", json=body, headers=a.headers("dev"))).status_code == 200
    content: Any = a.records("generation.requested")[-1]["content"]
    return str(content["ref"])


async def test_a_sealed_read_needs_a_second_auditor_and_names_both(two_person: Appliance) -> None:
    a = two_person
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=a.app), base_url="http://t")
    ref = await _sealed_ref(a, client)
    # Alone, the auditor is refused, and the refusal is recorded.
    alone = await client.get(f"/v1/audit/sealed/{ref}", headers=a.headers("aud"))
    assert alone.status_code == 403 and "second auditor" in alone.json()["error"]["message"]
    assert a.records("audit.content.read")[-1]["outcome"] == "denied"
    asked = await client.post(f"/v1/audit/sealed/{ref}/requests", json={"reason": "incident 4411"}, headers=a.headers("aud"))
    assert asked.status_code == 201, asked.text
    request_id = asked.json()["id"]
    assert asked.json()["status"] == "pending"
    listed = await client.get("/v1/audit/read-requests", headers=a.headers("aud2"))
    assert [r["id"] for r in listed.json()] == [request_id]
    # Nobody approves their own request; an admin holds no audit:decrypt at all.
    own = await client.post(f"/v1/audit/read-requests/{request_id}/approve", headers=a.headers("aud"))
    assert own.status_code == 403
    by_admin = await client.post(f"/v1/audit/read-requests/{request_id}/approve", headers=a.headers("adm"))
    assert by_admin.status_code == 403
    # The approval is for the requester only: the approver cannot use it to read.
    approved = await client.post(f"/v1/audit/read-requests/{request_id}/approve", headers=a.headers("aud2"))
    assert approved.status_code == 200 and approved.json()["approved_by"] == "aud2", approved.text
    assert (await client.get(f"/v1/audit/sealed/{ref}", headers=a.headers("aud2"))).status_code == 403
    read = await client.get(f"/v1/audit/sealed/{ref}", headers=a.headers("aud"))
    assert read.status_code == 200 and "secret plan" in read.json()["prompt"]
    record = a.records("audit.content.read")[-1]
    assert (record["actor"], record["outcome"], record["target"]) == ("aud", "success", ref)
    assert record["details"]["approved_by"] == "aud2" and record["details"]["read_request"] == request_id
    assert a.records("audit.content.read_requested")[-1]["details"]["reason"] == "incident 4411"
    assert a.records("audit.content.read_approved")[-1]["actor"] == "aud2"
    # One approval, one read.
    assert (await client.get(f"/v1/audit/sealed/{ref}", headers=a.headers("aud"))).status_code == 403
    again = await client.post(f"/v1/audit/read-requests/{request_id}/approve", headers=a.headers("aud2"))
    assert again.status_code == 409


async def test_a_read_request_expires_and_names_existing_content(two_person: Appliance) -> None:
    a = two_person
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=a.app), base_url="http://t")
    ref = await _sealed_ref(a, client)
    missing = "00000000-0000-0000-0000-000000000000"
    r = await client.post(f"/v1/audit/sealed/{missing}/requests", json={"reason": "x"}, headers=a.headers("aud"))
    assert r.status_code == 404
    r = await client.post(f"/v1/audit/sealed/{ref}/requests", json={"reason": "x", "for": "ever"}, headers=a.headers("aud"))
    assert r.status_code == 400 and r.json()["error"]["param"] == "for"
    asked = await client.post(f"/v1/audit/sealed/{ref}/requests", json={"reason": "audit"}, headers=a.headers("aud"))
    a.clock.advance(REQUEST_TTL.total_seconds())
    late = await client.post(f"/v1/audit/read-requests/{asked.json()['id']}/approve", headers=a.headers("aud2"))
    assert late.status_code == 409 and "expired" in late.text
    assert (await client.get("/v1/audit/read-requests", headers=a.headers("aud2"))).json() == []


def test_sealed_read_approvals_is_one_or_two(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={"ENCLAVE_SEALED_READ_APPROVALS": "2"}).sealed_read_approvals == 2
    with pytest.raises(ConfigError, match=r"sealed_read_approvals must be 1 .* or 2"):
        load_settings(tmp_path, environ={"ENCLAVE_SEALED_READ_APPROVALS": "3"})
