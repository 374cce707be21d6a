"""API tokens and login sessions: shown once, stored as digests, refused at once when dead."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from appliance.auth import (
    Permission,
    admin,
    authenticate,
    change_password,
    create_token,
    list_tokens,
    login,
    logout,
    revoke_token,
)
from appliance.db.engine import UnitOfWork
from appliance.db.models import ApiToken, User
from shared.errors import AuthError, ConflictError, InputError, NotFoundError
from shared.version import TOKEN_PREFIX
from tests.helpers.appliance_db import T0, THROTTLE_KEY, at, migrated_uow

PASSWORD = "violet-harbour-tangent-57"


@pytest.fixture
def uow(db_url: str) -> Iterator[UnitOfWork]:
    with migrated_uow(db_url) as unit:
        with unit() as s:
            admin.create_team(s, "default", now=T0)
            admin.create_user(s, "alice", role="developer", password=PASSWORD, now=T0)
            admin.create_user(s, "root", role="admin", password=PASSWORD + "-root", now=T0)
        yield unit


def _uid(uow: UnitOfWork, name: str) -> int:
    with uow() as s:
        return int(s.scalar(select(User.id).where(User.username == name)) or 0)


def _token(uow: UnitOfWork, name: str = "alice", days: int = 30, **kw: object) -> tuple[str, int]:
    with uow() as s:
        raw, info, change = create_token(
            s, _uid(uow, name), name="laptop", expires_in=dt.timedelta(days=days), now=T0, **kw  # type: ignore[arg-type]
        )
    assert change.new is not None and raw not in repr(change)
    return raw, info.id


def test_token_format_and_principal(uow: UnitOfWork) -> None:
    raw, token_id = _token(uow)
    assert raw.startswith(TOKEN_PREFIX) and len(raw) == len(TOKEN_PREFIX) + 43
    with uow() as s:
        p = authenticate(s, raw, now=at(60))
    assert (p.username, p.token_id, p.kind) == ("alice", token_id, "api_token")
    assert p.can(Permission.GENERATE) and not p.can(Permission.USERS_MANAGE)
    assert p.policy.allows_model("deepseek-v4-demo")
    assert p.team_ids and p.policy.capture_mode == "digest"


def test_revoked_token_is_refused_on_the_next_request(uow: UnitOfWork) -> None:
    raw, token_id = _token(uow)
    with uow() as s:
        authenticate(s, raw, now=at(1))
        change = revoke_token(s, token_id, now=at(2))
    assert (change.old, change.new) == ({"status": "active"}, {"status": "revoked"})
    with uow() as s, pytest.raises(AuthError) as info:
        authenticate(s, raw, now=at(3))
    assert info.value.reason == "revoked"
    with uow() as s, pytest.raises(ConflictError, match="already revoked"):
        revoke_token(s, token_id, now=at(4))


def test_expired_token_is_refused_from_its_expiry_on(uow: UnitOfWork) -> None:
    raw, _ = _token(uow, days=1)
    with uow() as s:
        authenticate(s, raw, now=at(86_399))
    with uow() as s, pytest.raises(AuthError) as info:
        authenticate(s, raw, now=at(86_400))
    assert info.value.reason == "expired"


def test_expiry_is_mandatory_and_bounded(uow: UnitOfWork) -> None:
    for days in (0, -1, 366):
        with uow() as s, pytest.raises(InputError, match="expiry"):
            create_token(s, _uid(uow, "alice"), name="x", expires_in=dt.timedelta(days=days), now=T0)
    with uow() as s:
        assert list_tokens(s) == []
    _token(uow, days=365)


def test_scopes_narrow_and_cannot_exceed_the_role(uow: UnitOfWork) -> None:
    raw, _ = _token(uow, scopes=["models:read"])
    with uow() as s:
        p = authenticate(s, raw, now=at(1))
    assert p.can("models:read") and not p.can("generate")
    with uow() as s, pytest.raises(InputError, match="cannot grant"):
        create_token(s, _uid(uow, "alice"), name="x", expires_in=dt.timedelta(days=1), now=T0, scopes=["users:manage"])
    with uow() as s, pytest.raises(InputError, match="unknown scope"):
        create_token(s, _uid(uow, "alice"), name="x", expires_in=dt.timedelta(days=1), now=T0, scopes=["everything"])


def test_role_change_and_disable_apply_on_the_next_request(uow: UnitOfWork) -> None:
    raw, _ = _token(uow)
    with uow() as s:
        admin.set_role(s, "alice", "auditor", now=at(1))
    with uow() as s:
        p = authenticate(s, raw, now=at(2))
    # The token's scopes were a developer's; an auditor holds none of generate/projects.
    assert not p.can("generate") and not p.can("audit:read") and p.can("models:read")
    with uow() as s:
        admin.disable_user(s, "alice", now=at(3))
    with uow() as s, pytest.raises(AuthError) as info:
        authenticate(s, raw, now=at(4))
    assert info.value.reason == "disabled"


def test_unknown_or_malformed_tokens_are_refused(uow: UnitOfWork) -> None:
    for raw in ("", "Bearer x", TOKEN_PREFIX + "A" * 43, TOKEN_PREFIX + "short"):
        with uow() as s, pytest.raises(AuthError) as info:
            authenticate(s, raw, now=T0)
        assert info.value.reason in {"malformed", "unknown_token"}, raw


def test_login_session_lifecycle(uow: UnitOfWork) -> None:
    with uow() as s:
        raw, expires = login(s, "Alice", PASSWORD, address="10.0.0.5", throttle_key=THROTTLE_KEY, now=T0, ttl_s=600)
    assert expires == at(600) and raw.startswith(TOKEN_PREFIX)
    with uow() as s:
        p = authenticate(s, raw, now=at(599))
    assert p.kind == "session" and p.can("generate")
    with uow() as s, pytest.raises(AuthError) as info:
        authenticate(s, raw, now=at(600))
    assert info.value.reason == "expired"
    with uow() as s:
        raw2, _ = login(s, "alice", PASSWORD, address="10.0.0.5", throttle_key=THROTTLE_KEY, now=at(700))
    with uow() as s:
        assert logout(s, raw2, now=at(701)) == p.user_id
    with uow() as s, pytest.raises(AuthError) as info:
        authenticate(s, raw2, now=at(702))
    assert info.value.reason == "revoked"


def test_wrong_password_unknown_user_and_disabled(uow: UnitOfWork) -> None:
    for name, password, reason in [("alice", "not-the-password-at-all", "bad_password"), ("mallory", PASSWORD, "unknown_user")]:
        with uow() as s, pytest.raises(AuthError) as info:
            login(s, name, password, address="10.0.0.9", throttle_key=THROTTLE_KEY, now=T0)
        assert info.value.reason == reason
        assert str(info.value) == "invalid username or password"
    with uow() as s:
        admin.disable_user(s, "alice", now=T0)
    with uow() as s, pytest.raises(AuthError) as info:
        login(s, "alice", PASSWORD, address="10.0.0.9", throttle_key=THROTTLE_KEY, now=at(1))
    assert info.value.reason == "disabled"


def test_one_time_password_must_be_changed_first(uow: UnitOfWork) -> None:
    with uow() as s:
        _, one_time = admin.create_user(s, "bob", role="developer", now=T0)
    assert one_time is not None
    with uow() as s:
        raw, _ = login(s, "bob", one_time, address="10.0.0.7", throttle_key=THROTTLE_KEY, now=at(1))
    with uow() as s:
        p = authenticate(s, raw, now=at(2))
    assert p.must_change_password and p.permissions == {Permission.PASSWORD_CHANGE}
    with uow() as s, pytest.raises(InputError):
        change_password(s, p.user_id, one_time, "password12345678", throttle_key=THROTTLE_KEY, now=at(3))
    with uow() as s:
        change_password(s, p.user_id, one_time, "copper-meadow-lantern-91", throttle_key=THROTTLE_KEY, now=at(3))
    with uow() as s, pytest.raises(AuthError):
        authenticate(s, raw, now=at(4))  # every session ends with the password change
    with uow() as s:
        raw, _ = login(s, "bob", "copper-meadow-lantern-91", address="10.0.0.7", throttle_key=THROTTLE_KEY, now=at(5))
        assert authenticate(s, raw, now=at(6)).can("generate")


def test_revoke_checks_owner(uow: UnitOfWork) -> None:
    _, token_id = _token(uow)
    with uow() as s, pytest.raises(NotFoundError):
        revoke_token(s, token_id, now=at(1), owner_id=_uid(uow, "root"))
    with uow() as s:
        assert s.get(ApiToken, token_id).revoked_at is None  # type: ignore[union-attr]
