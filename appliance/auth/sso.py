"""Single sign-on, the database half: sign-ins in flight (``state`` -> nonce, PKCE verifier,
redirect URI; single use, ten minutes), the provider subject -> user link, group mapping and the
appliance's own login session at the end.

The appliance, not the client, exchanges the code: the client (the desktop's loopback listener, or
any program) only carries ``code`` and ``state`` back. Nothing commits; the route audits in the
same transaction.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from appliance.auth import groups
from appliance.auth.login import open_session
from appliance.auth.oidc import OidcClient
from appliance.auth.secrets import token_digest
from appliance.db.identity_models import IdentityLink, OidcFlow, ScimResource
from appliance.db.models import User
from shared.errors import AuthError, InputError

__all__ = ["FLOW_TTL", "NO_PASSWORD", "SignedIn", "begin", "check_redirect_uri", "enter", "finish"]

FLOW_TTL = dt.timedelta(minutes=10)
# A PHC string verify_password can never match: outside users have no usable password here.
NO_PASSWORD = "!external"


@dataclass(frozen=True, kw_only=True)
class SignedIn:
    user_id: int
    token: str
    expires_at: dt.datetime
    username: str
    subject: str
    groups: tuple[str, ...]
    created: bool
    changes: dict[str, object] | None


def check_redirect_uri(uri: str, allowed: tuple[str, ...]) -> str:
    """RFC 8252 loopback (``http://127.0.0.1:<any port>/...`` or ``[::1]``) or one the admin listed."""
    if uri in allowed:
        return uri
    parts = urllib.parse.urlsplit(uri)
    try:
        loopback = parts.hostname is not None and ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme == "http" and loopback and parts.port and not parts.query and not parts.fragment:
        return uri
    raise InputError(
        "redirect_uri must be a loopback http://127.0.0.1:PORT/... address (RFC 8252) or one in oidc_redirect_uris"
    )


def begin(session: Session, client: OidcClient, redirect_uri: str, *, now: dt.datetime) -> tuple[str, str]:
    """Start a sign-in; returns (authorization URL, state). Also drops flows that ran out."""
    request = client.begin(redirect_uri)
    session.execute(delete(OidcFlow).where(OidcFlow.expires_at <= now))
    session.add(
        OidcFlow(
            state_digest=token_digest(request.state),
            nonce=request.nonce,
            code_verifier=request.code_verifier,
            redirect_uri=redirect_uri,
            created_at=now,
            expires_at=now + FLOW_TTL,
        )
    )
    session.flush()
    return request.url, request.state


def _username(claims: dict[str, Any], claim: str) -> str:
    raw = claims.get(claim) or claims.get("email") or ""
    name = str(raw).strip().lower()
    if claim != "email" and "@" in name and claims.get(claim) is None:
        name = name.split("@", 1)[0]
    if not name or len(name) > 64:
        raise AuthError(f"ID token has no usable {claim} claim for the username", reason="no_username")
    return name


def finish(
    session: Session,
    client: OidcClient,
    *,
    state: str,
    code: str,
    address: str,
    now: dt.datetime,
    ttl_s: int,
    username_claim: str,
    groups_claim: str,
) -> SignedIn:
    """Redeem ``code`` for the flow ``state`` names, verify the ID token, map groups, open a session.

    Raises AuthError (reasons: ``unknown_state``, ``expired_state``, the IdTokenError/OidcError
    reasons, ``no_group``, ``disabled``, ``username_taken``). The flow is consumed either way.
    """
    flow = session.scalar(select(OidcFlow).where(OidcFlow.state_digest == token_digest(state)))
    if flow is None:
        raise AuthError("unknown or already used sign-in state", reason="unknown_state")
    session.delete(flow)
    session.flush()
    if now >= flow.expires_at:
        raise AuthError("sign-in took too long; start again", reason="expired_state")
    id_token = client.redeem(code, redirect_uri=flow.redirect_uri, code_verifier=flow.code_verifier)
    claims = client.verify(id_token, nonce=flow.nonce, now=now)
    raw_groups = claims.get(groups_claim, [])
    member_of = tuple(str(g) for g in raw_groups) if isinstance(raw_groups, list) else ()
    return enter(
        session,
        provider=f"oidc:{client.issuer}",
        source="oidc",
        subject=str(claims["sub"]),
        username=lambda: _username(claims, username_claim),
        member_of=member_of,
        address=address,
        now=now,
        ttl_s=ttl_s,
    )


def enter(
    session: Session,
    *,
    provider: str,
    source: str,
    subject: str,
    username: Callable[[], str],
    member_of: tuple[str, ...],
    address: str,
    now: dt.datetime,
    ttl_s: int,
) -> SignedIn:
    """Sign in a user the provider vouched for: map their groups (none mapped: refused), find or
    create the account linked to ``(provider, subject)``, open a session.

    ``username`` is asked only when the account is created. Raises AuthError (``no_group``,
    ``disabled``, ``username_taken``, ``unknown_user``). Shared by OIDC and LDAP.
    """
    resolved = groups.resolve(session, source, member_of)
    if resolved is None:
        raise AuthError("none of your identity provider groups is allowed to use Enclave", reason="no_group")
    link = session.scalar(
        select(IdentityLink).where(IdentityLink.provider == provider, IdentityLink.subject == subject)
    )
    created = False
    existing: User | None = None
    if link is None:
        name = username()
        existing = session.scalar(select(User).where(User.username == name))
        provisioned = existing is not None and (
            existing.password_hash == NO_PASSWORD
            and session.scalar(select(ScimResource.id).where(ScimResource.user_id == existing.id)) is not None
        )
        if existing is not None and not provisioned:
            raise AuthError(f"username {name!r} already belongs to another account", reason="username_taken")
    if link is None and existing is not None:
        # The IdP provisioned this account through SCIM: its first sign-in links to it.
        user = existing
        link = IdentityLink(
            provider=provider, subject=subject, user_id=user.id, created_at=now, last_sign_in_at=None
        )
        session.add(link)
    elif link is None:
        user = User(
            username=name,
            password_hash=NO_PASSWORD,
            role=resolved.role.value,
            must_change_password=False,
            created_at=now,
            password_changed_at=now,
            disabled_at=None,
        )
        session.add(user)
        session.flush()
        link = IdentityLink(
            provider=provider, subject=subject, user_id=user.id, created_at=now, last_sign_in_at=None
        )
        session.add(link)
        created = True
    else:
        found = session.get(User, link.user_id)
        if found is None:
            raise AuthError("linked account is gone", reason="unknown_user")
        user = found
    if user.disabled:
        raise AuthError("account is disabled", reason="disabled")
    link.last_sign_in_at = now
    changes = groups.apply(session, user, resolved, now=now)
    token, expires = open_session(session, user, address=address, now=now, ttl_s=ttl_s)
    return SignedIn(
        user_id=user.id,
        token=token,
        expires_at=expires,
        username=user.username,
        subject=subject,
        groups=member_of,
        created=created,
        changes=changes,
    )
