"""Accounts the way a site gets them: an admin adds one and is shown a one-time password once; the
account's holder signs in with it and chooses their own password through the real API. Tests that
need a user with a known password go through here (there is no way to set one for someone else)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from appliance.audit.keys import load_audit_keys
from appliance.auth import admin, throttle
from appliance.auth.login import change_password
from appliance.db.base import utcnow
from appliance.db.datadir import load_data_dir, open_database

__all__ = ["choose_password", "choose_password_offline", "one_time_password"]

_ONE_TIME = re.compile(r"one-time password \(shown only now[^)]*\): (\S+)")


def one_time_password(cli_output: str) -> str:
    """The one-time password ``enclave user add`` (or ``reset-password``) printed."""
    match = _ONE_TIME.search(cli_output)
    assert match, cli_output
    return match.group(1)


def choose_password(http: httpx.Client, username: str, one_time: str, password: str) -> None:
    """Sign in as ``username`` with its one-time password and replace it with ``password``."""
    login = http.post("/v1/auth/login", json={"username": username, "password": one_time})
    assert login.status_code == 200, login.text
    changed = http.post(
        "/v1/auth/password",
        json={"old_password": one_time, "new_password": password},
        headers={"Authorization": f"Bearer {login.json()['token']}"},
    )
    assert changed.status_code == 204, changed.text


def choose_password_offline(data_dir: Path, username: str, one_time: str, password: str) -> None:
    """What :func:`choose_password` does, on a data directory no server is serving: the same
    password change (old password checked, throttled, sessions ended), without the HTTP round trip."""
    settings = load_data_dir(data_dir)
    key = throttle.derive_key(load_audit_keys(settings))
    with open_database(settings) as (_, uow), uow() as session:
        user = admin.get_user(session, username)
        change_password(session, user.id, one_time, password, throttle_key=key, now=utcnow())
