"""``create_app``: the FastAPI application, with every dependency passed in.

Tests build it with a fake engine and a fake clock; ``enclave serve`` builds it with the real engine.
``engine`` may be ``None`` while a model is still loading: ``/readyz`` says so and generation routes
answer 503 until :func:`set_engine` installs one.

The interactive docs pages are off: they load scripts from a CDN, and the appliance makes and
invites no outbound connection. ``/openapi.json`` stays, complete.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from appliance.api.auditing import Auditor, summary_event
from appliance.api.clock import Clock, SystemClock
from appliance.api.diskwatch import DiskWatch
from appliance.api.errors import install_error_handlers
from appliance.api.flood import FailureAggregator
from appliance.api.metrics import Metrics
from appliance.api.middleware import EdgeMiddleware
from appliance.api.openai_stream import stream_components
from appliance.api.quotas import QuotaTracker
from appliance.api.reads import read_only_uow
from appliance.api.routes import (
    admin,
    audit,
    auth,
    auth_methods,
    group_mappings,
    health,
    ldap,
    openai,
    refresh,
    scim,
    sso,
)
from appliance.api.state import AppState
from appliance.audit.log import AuditLog
from appliance.auth.ldap import LdapDirectory
from appliance.auth.oidc import OidcClient
from appliance.config import Settings
from appliance.db.engine import UnitOfWork
from appliance.engine.types import GenerationService
from shared.errors import EnclaveError
from shared.version import VERSION

__all__ = ["close_app", "create_app", "set_engine"]

log = logging.getLogger(__name__)


def _openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents 422 for validation errors; this API answers 400 (OpenAI's code) instead.
    The streaming chunk schemas that the event-stream responses name are added as components."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, body in stream_components().items():
        components.setdefault(name, body)
    app.openapi_schema = schema
    return schema


def _oidc_client(settings: Settings, transport: httpx.BaseTransport | None) -> OidcClient | None:
    if not settings.oidc_issuer:
        return None
    # Discovery happens on first use, so a provider that is down at start-up does not stop serving.
    return OidcClient(
        issuer=settings.oidc_issuer,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        scopes=settings.oidc_scopes,
        clock_skew_s=settings.oidc_clock_skew_s,
        jwks_max_age_s=settings.oidc_jwks_max_age_s,
        transport=transport,
    )


def _ldap_directory(settings: Settings) -> LdapDirectory | None:
    if not settings.ldap_url:
        return None
    # Connections are made per sign-in, so a directory that is down at start-up does not stop serving.
    return LdapDirectory(
        url=settings.ldap_url,
        starttls=settings.ldap_starttls,
        ca_file=settings.ldap_ca_file,
        bind_dn=settings.ldap_bind_dn,
        bind_password=settings.ldap_bind_password,
        user_base=settings.ldap_user_base,
        user_filter=settings.ldap_user_filter,
        group_base=settings.ldap_group_base,
        group_filter=settings.ldap_group_filter,
        timeout_s=settings.ldap_timeout_s,
    )


def create_app(
    *,
    settings: Settings,
    uow: UnitOfWork,
    audit_log: AuditLog,
    engine: GenerationService | None,
    clock: Clock | None = None,
    idp_transport: httpx.BaseTransport | None = None,
) -> FastAPI:
    clock = clock or SystemClock()
    metrics = Metrics(
        queue_depth=lambda: float(state.engine.stats().waiting) if state.engine else 0.0,
        running=lambda: float(state.engine.stats().running) if state.engine else 0.0,
    )
    state = AppState(
        settings=settings,
        uow=uow,
        read_uow=read_only_uow(uow),
        audit_log=audit_log,
        auditor=Auditor(
            audit_log,
            metrics=metrics,
            clock=clock,
            failures=FailureAggregator(
                interval_s=settings.audit_unauth_interval_s,
                per_source=settings.audit_unauth_per_source,
                per_interval=settings.audit_unauth_per_interval,
            ),
        ),
        engine=engine,
        clock=clock,
        metrics=metrics,
        quotas=QuotaTracker(clock.monotonic),
        disk=DiskWatch(
            settings.data_dir,
            min_free_bytes=settings.disk_min_free_bytes,
            metrics=metrics,
            monotonic=clock.monotonic,
        ),
        started_at=int(clock.now().timestamp()),
        oidc=_oidc_client(settings, idp_transport),
        ldap=_ldap_directory(settings),
    )
    app = FastAPI(
        title="Enclave appliance API",
        version=VERSION,
        description="OpenAI-compatible generation with access control and a tamper-evident audit log.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.enclave = state
    install_error_handlers(app)
    # scim last: its catch-all answers the rest of /scim/v2 with SCIM errors.
    for module in (openai, auth, auth_methods, refresh, sso, ldap, admin, group_mappings, audit, health, scim):
        app.include_router(module.router)
    if settings.cors_origin_list:
        # Off unless origins are named: a browser page elsewhere must not drive a user's session.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origin_list),
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["X-Request-Id", "Retry-After"],
        )
    # Outermost: the request id exists before anything can fail, and 413s are counted.
    app.add_middleware(EdgeMiddleware, limit=settings.max_body_bytes, metrics=metrics)
    app.openapi = lambda: _openapi_without_422(app)  # type: ignore[method-assign]
    return app


def close_app(app: FastAPI) -> None:
    """Release what ``create_app`` opened itself (the read-only database engine, the body parser's
    helper process)."""
    state: AppState = app.state.enclave
    # The open interval's count of suppressed failures is evidence too.
    for summary in state.auditor.failures.drain(now=state.clock.monotonic(), force=True):
        try:
            state.audit_log.append(summary_event(summary))
        except EnclaveError as exc:
            log.error("audit: could not record the last failure summary: %s", exc)
    if state.oidc is not None:
        state.oidc.close()
    state.body_parser.close()
    if state.read_uow is not state.uow:
        state.read_uow.engine.dispose()


def set_engine(app: FastAPI, engine: GenerationService | None) -> None:
    """Install (or remove) the engine once its model has loaded."""
    app.state.enclave.engine = engine
