"""SCIM deprovisioning: time from ``PATCH /scim/v2/Users/{id} active=false`` to the first 401 on
that user's token, against a plain authenticated request measured in the same run (issue 16: goal
under 1 s).

    .venv/bin/python bench/scim.py [--users 20]

Serves the appliance (SQLite, the fake engine) with uvicorn on loopback. For each of ``--users``
provisioned users holding an API token, a thread calls ``GET /v1/auth/me`` with the token back to
back while the main thread sends the deactivating PATCH; the refusal time is from just before the
PATCH is sent to the first 401 the poller sees. Prints its median and max, the PATCH round trip and
a plain ``/v1/auth/me`` round trip (the peer), and their ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from appliance.auth import admin as ops
from appliance.auth import groups
from appliance.auth import tokens as token_ops
from tests.appliance.api.conftest import T0, build_appliance
from tests.helpers.live_server import live_server

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="enclave-bench-scim-"))
    app = build_appliance(root, f"sqlite:///{root / 'enclave.db'}")
    with app.uow() as session:
        groups.add_mapping(session, "scim", "Engineering", "default", "developer", now=T0)
        scim_token, _, _ = token_ops.create_token(
            session, ops.get_user(session, "adm").id, name="idp", expires_in=dt.timedelta(days=30), now=T0,
            scopes=["scim:provision"],
        )
    refusal: list[float] = []
    patch_rtt: list[float] = []
    me_rtt: list[float] = []
    try:
        with live_server(app.app) as url, httpx.Client(base_url=url, timeout=30) as http:
            scim = {"Authorization": f"Bearer {scim_token}", "Content-Type": "application/scim+json"}
            for i in range(args.users):
                made = http.post("/scim/v2/Users", json={"schemas": [USER], "userName": f"bench{i}"}, headers=scim)
                assert made.status_code == 201, made.text
                with app.uow() as session:
                    raw, _, _ = token_ops.create_token(
                        session, ops.get_user(session, f"bench{i}").id, name="t", expires_in=dt.timedelta(days=7),
                        now=app.clock.now(),
                    )
                auth = {"Authorization": f"Bearer {raw}"}
                for _ in range(3):
                    t = time.perf_counter()
                    assert http.get("/v1/auth/me", headers=auth).status_code == 200
                    me_rtt.append(time.perf_counter() - t)
                seen: list[float] = []
                stop = threading.Event()

                def poll(
                    token_headers: dict[str, str] = auth, seen: list[float] = seen, stop: threading.Event = stop
                ) -> None:
                    with httpx.Client(base_url=url, timeout=30) as poller:
                        while not stop.is_set():
                            if poller.get("/v1/auth/me", headers=token_headers).status_code == 401:
                                seen.append(time.perf_counter())
                                return

                thread = threading.Thread(target=poll)
                thread.start()
                time.sleep(0.05)
                t0 = time.perf_counter()
                body = {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]}
                r = http.patch(f"/scim/v2/Users/{made.json()['id']}", json=body, headers=scim)
                patch_rtt.append(time.perf_counter() - t0)
                assert r.status_code == 204, r.text
                thread.join(timeout=10)
                stop.set()
                assert seen, "the token was never refused"
                refusal.append(seen[0] - t0)
    finally:
        app.close()
    med = statistics.median
    print(f"users deprovisioned: {len(refusal)}")
    print(f"deactivation -> first 401: median {med(refusal) * 1000:.1f} ms, max {max(refusal) * 1000:.1f} ms (goal < 1000 ms)")
    print(f"PATCH active=false round trip: median {med(patch_rtt) * 1000:.1f} ms")
    print(f"peer, GET /v1/auth/me round trip: median {med(me_rtt) * 1000:.1f} ms")
    print(f"ratio refusal / plain request: {med(refusal) / med(me_rtt):.1f}x")


if __name__ == "__main__":
    main()
