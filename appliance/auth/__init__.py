"""Access control: who is calling, what they may do, and the admin operations on both.

Public surface (everything else is private to the package)::

    authenticate(session, raw_token, *, now) -> Principal       API token or login session token
    login(session, username, password, *, address, throttle_key, now, ttl_s) -> (session token, expires_at)
    logout(session, raw_token, *, now) -> user id
    change_password(session, user_id, old, new, *, throttle_key, now)
    create_token(session, user_id, *, name, expires_in, now, scopes=None) -> (raw, TokenInfo, Change)
    revoke_token(session, token_id, *, now, owner_id=None) -> Change
    list_tokens(session, *, user_id=None) -> [TokenInfo]
    require(principal, permission)                               raises PermissionDeniedError
    admin.*: create_user, disable_user, enable_user, set_role, reset_password, unlock_user,
             create_team, add_member, remove_member, set_policy, get_policy,
             register_model, set_model_active, list_models, list_users, list_teams
    maintenance.purge(session, *, now) -> counts                ended sessions, lapsed windows, old tokens

Every function takes the caller's SQLAlchemy Session and never commits, so the caller records the
audit event (``Change.old`` -> ``Change.new``) in the same transaction. Time is passed in
(``now``, timezone-aware UTC), never read inside. Failures use shared.errors:

    AuthError        reason: malformed | unknown_token | unknown_user | bad_password | disabled
                             | expired | revoked
    ThrottledError   reason: throttled | locked; retry_after seconds (the attempt was not counted)
    PermissionDeniedError, InputError, NotFoundError, ConflictError

``throttle_key`` is :func:`throttle.derive_key` of the audit keys: the login throttle stores keyed
digests of the names and addresses it counts, never what was typed.

A failed login has already counted the failure in the session: commit it (with the audit event)
before letting the error propagate.
"""

from __future__ import annotations

from appliance.auth import admin
from appliance.auth.change import Change
from appliance.auth.login import DEFAULT_SESSION_TTL_S, change_password, login, logout
from appliance.auth.passwords import check_password, hash_password, verify_password
from appliance.auth.policy import CaptureMode, EffectivePolicy
from appliance.auth.principal import Principal, authenticate, principal_for_user, require
from appliance.auth.roles import ROLE_PERMISSIONS, Permission, Role, permissions_for
from appliance.auth.secrets import TOKEN_PATTERN, looks_like_token
from appliance.auth.tokens import MAX_TOKEN_LIFETIME, TokenInfo, create_token, list_tokens, revoke_token

__all__ = [
    "DEFAULT_SESSION_TTL_S",
    "MAX_TOKEN_LIFETIME",
    "ROLE_PERMISSIONS",
    "TOKEN_PATTERN",
    "CaptureMode",
    "Change",
    "EffectivePolicy",
    "Permission",
    "Principal",
    "Role",
    "TokenInfo",
    "admin",
    "authenticate",
    "change_password",
    "check_password",
    "create_token",
    "hash_password",
    "list_tokens",
    "login",
    "logout",
    "looks_like_token",
    "permissions_for",
    "principal_for_user",
    "require",
    "revoke_token",
    "verify_password",
]
