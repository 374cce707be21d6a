"""What every route reaches through ``request.app.state.enclave``: the app's dependencies, and the
authentication dependency that turns a bearer token into a :class:`Caller` holding a permission."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError
from starlette.datastructures import Headers

from appliance.api.auditing import Auditor, Caller, RequestInfo
from appliance.api.authn import NeedsWrite, authenticate_fast
from appliance.api.body_parse import BodyParser
from appliance.api.clock import Clock
from appliance.api.diskwatch import DiskWatch
from appliance.api.metrics import Metrics
from appliance.api.quotas import QuotaTracker
from appliance.audit.log import AuditLog
from appliance.auth import throttle
from appliance.auth.ldap import LdapDirectory
from appliance.auth.oidc import OidcClient
from appliance.auth.passwords import ARGON2_SLOTS
from appliance.auth.principal import Principal, authenticate, require
from appliance.auth.roles import Permission
from appliance.config import Settings
from appliance.db.engine import UnitOfWork
from appliance.engine.types import GenerationService
from shared.errors import AuthError, DatabaseError, PermissionDeniedError

__all__ = [
    "ANY_PRINCIPAL",
    "MAX_ID",
    "AppState",
    "app_state",
    "bearer",
    "caller_with",
    "client_address",
    "request_info",
]

# Largest id a path may name: the database's 64-bit integer range.
MAX_ID = 2**63 - 1

# The permission of routes open to every authenticated principal (sign-out, "who am I"): a valid
# token, whatever its role, scopes or pending password change.
ANY_PRINCIPAL: None = None

# Token rejections that name no token or user: aggregated per source (appliance.api.flood).
ANONYMOUS_REASONS = frozenset({"malformed", "unknown_token"})

bearer = HTTPBearer(auto_error=False, description="An API token or a session token from /v1/auth/login")


@dataclass
class AppState:
    settings: Settings
    uow: UnitOfWork
    # Reads that must not queue behind writers (see appliance.api.reads).
    read_uow: UnitOfWork
    audit_log: AuditLog
    auditor: Auditor
    engine: GenerationService | None
    clock: Clock
    metrics: Metrics
    quotas: QuotaTracker
    disk: DiskWatch
    # Unix time the app was created; the `created` of the served model's card.
    started_at: int
    # Worker threads for password checks: their own few, so a login spray waits here and never
    # holds the threads that authenticate and tokenize generation requests.
    password_work: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(ARGON2_SLOTS))
    # The OpenID provider's client, when single sign-on is configured.
    oidc: OidcClient | None = None
    # Parses large generation bodies in a helper process, off the event loop.
    body_parser: BodyParser = field(default_factory=BodyParser)
    # The site directory, when LDAP sign-in is configured.
    ldap: LdapDirectory | None = None

    @property
    def throttle_key(self) -> bytes:
        """Keys the login throttle's stored digests (derived from the audit HMAC key)."""
        return throttle.derive_key(self.audit_log.keys)


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.enclave
    return state


def request_info(request: Request) -> RequestInfo:
    request_id = getattr(request.state, "request_id", "") or ""
    peer = request.client.host if request.client else ""
    proxies = app_state(request).settings.trusted_proxy_networks
    return RequestInfo(request_id=request_id, client_address=client_address(peer, request.headers, proxies))


def client_address(
    peer: str,
    headers: Headers,
    proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str:
    """The client's address: the TCP peer, unless the peer is a trusted proxy — then the nearest
    X-Forwarded-For hop that is not one. Hops a client wrote itself (left of the first untrusted
    one) are never believed."""
    if not proxies or not _within(peer, proxies):
        return peer
    hops = [h.strip() for h in ",".join(headers.getlist("x-forwarded-for")).split(",")]
    address = peer
    for hop in reversed([h for h in hops if h]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # not an address: stop believing the chain here
        address = hop
        if not _within(hop, proxies):
            break
    return address


def _within(address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _authenticate(state: AppState, token: str) -> Principal:
    now = state.clock.now()
    try:
        with state.read_uow.engine.connect() as conn:
            return authenticate_fast(conn, token, now=now)
    except NeedsWrite:
        # The token's last_used_at is due (at most once a minute): the ORM path writes it.
        pass
    except OperationalError as exc:
        # As the unit of work reports it: one line, and a 503 rather than a 500.
        first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        raise DatabaseError(f"database unavailable: {first}") from exc
    with state.uow() as session:
        return authenticate(session, token, now=now)


def caller_with(permission: Permission | None) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the authenticated caller, who must hold ``permission`` (401 / 403 otherwise);
    :data:`ANY_PRINCIPAL` asks only for a valid token.

    Rejected tokens and denied permissions are audited. A request with no credentials at all is
    not: it carries no identity to record, and auditing it would let anyone flood the log.
    """

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Caller:
        state = app_state(request)
        info = request_info(request)
        if credentials is None or not credentials.credentials:
            raise AuthError("missing bearer token (Authorization: Bearer <token>)")
        try:
            principal = await anyio.to_thread.run_sync(_authenticate, state, credentials.credentials)
        except AuthError as exc:
            reason = str(getattr(exc, "reason", "") or "invalid")
            action = "auth.token.used_after_expiry" if reason == "expired" else "auth.token.rejected"
            if reason in ANONYMOUS_REASONS:
                # Names no token or user: anyone can send these, as fast as they like.
                await state.auditor.record_unauthenticated(
                    info, action=action, reason=reason, target=request.url.path, outcome="failure"
                )
                raise
            await state.auditor.record_quietly(
                None,
                info,
                action=action,
                target=request.url.path,
                outcome="failure",
                details={"reason": reason},
            )
            raise
        caller = Caller(principal)
        if permission is None:
            return caller
        try:
            require(principal, permission)
        except PermissionDeniedError:
            await state.auditor.record_quietly(
                caller,
                info,
                action="authz.denied",
                target=request.url.path,
                outcome="denied",
                details={"permission": permission.value, "method": request.method},
            )
            raise
        return caller

    # The route table names what each route needs; the authorization matrix test reads it here.
    dependency.permission = permission  # type: ignore[attr-defined]
    return dependency
