"""``GET /healthz`` (the process answers), ``GET /readyz`` (a model is loaded and the database answers),
``GET /metrics`` (Prometheus text exposition). None of them needs a token: probes and scrapers run
without one, and none of them reveals more than counts."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from appliance.api.state import AppState, app_state
from shared.errors import DatabaseError
from shared.schemas import HealthStatus

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthStatus, summary="Liveness")
async def healthz() -> HealthStatus:
    return HealthStatus(status="ok")


def _database_ok(state: AppState) -> str:
    try:
        with state.read_uow() as session:
            session.execute(text("SELECT 1"))
    except (SQLAlchemyError, DatabaseError) as exc:
        return f"unreachable: {type(exc).__name__}"
    return "ok"


@router.get(
    "/readyz",
    response_model=HealthStatus,
    responses={
        503: {
            "model": HealthStatus,
            "description": "Not ready: no model loaded, no database, or the disk almost full",
        }
    },
    summary="Readiness: model loaded and database reachable",
)
async def readyz(request: Request) -> JSONResponse:
    state = app_state(request)
    checks = {
        "model": "ok" if state.engine is not None else "not loaded",
        "database": await anyio.to_thread.run_sync(_database_ok, state),
        "disk": await anyio.to_thread.run_sync(state.disk.status),
    }
    ready = all(v == "ok" for v in checks.values())
    body = HealthStatus(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> PlainTextResponse:
    state = app_state(request)
    await anyio.to_thread.run_sync(state.disk.free_bytes)  # the disk gauges, fresh
    body = state.metrics.render()
    return PlainTextResponse(body, media_type="text/plain; version=0.0.4; charset=utf-8")
