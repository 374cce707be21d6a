"""Every error the API returns, in OpenAI's envelope ``{"error": {"message", "type", "code", "param"}}``.

Status codes follow OpenAI's: a malformed body or an invalid value is 400 (FastAPI's default would be
422), an unknown model 404, a missing or bad token 401, a missing permission 403, a body over the limit
413, a quota 429 with ``Retry-After``, and an audit store or engine that cannot serve 503. The mapping
from :mod:`shared.errors` is one table; anything outside that tree is a bug and is logged with its
traceback, while the client still gets an envelope (500) rather than an HTML page.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from shared import errors as E
from shared.schemas import ErrorResponse

__all__ = [
    "ERROR_RESPONSES",
    "ApiError",
    "error_response",
    "install_error_handlers",
]

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP error raised by route code for conditions with no :mod:`shared.errors` counterpart."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}


# Order matters: subclasses before their parents.
_MAPPING: Sequence[tuple[type[E.EnclaveError], int, str, str]] = (
    (E.NotFoundError, 404, "invalid_request_error", "not_found"),
    (E.ConflictError, 409, "invalid_request_error", "conflict"),
    (E.InputError, 400, "invalid_request_error", "invalid_value"),
    (E.ThrottledError, 429, "rate_limit_error", "too_many_attempts"),
    (E.AuthError, 401, "authentication_error", "invalid_api_key"),
    (E.PermissionDeniedError, 403, "permission_error", "permission_denied"),
    (E.QuotaError, 429, "rate_limit_error", "rate_limit_exceeded"),
    (E.AuditUnavailableError, 503, "service_unavailable", "audit_unavailable"),
    (E.DatabaseError, 503, "service_unavailable", "database_unavailable"),
    (E.EngineError, 503, "service_unavailable", "engine_unavailable"),
    (E.IntegrityError, 409, "invalid_request_error", "integrity_error"),
    (E.ModelError, 409, "invalid_request_error", "model_error"),
    (E.ConfigError, 503, "service_unavailable", "misconfigured"),
    (E.UpstreamError, 503, "service_unavailable", "directory_unavailable"),
)

_UNAVAILABLE_RETRY_S = 5
_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_response(
    status: int,
    message: str,
    *,
    type: str | None = None,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "error": {
            "message": message,
            "type": type or _STATUS_TYPES.get(status, "server_error"),
            "code": code,
            "param": param,
        }
    }
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(body, status_code=status, headers=all_headers)


def _retry_after(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def enclave_error_response(exc: E.EnclaveError) -> JSONResponse:
    for cls, status, type_, code in _MAPPING:
        if isinstance(exc, cls):
            headers: dict[str, str] = {}
            if isinstance(exc, E.ThrottledError | E.QuotaError):
                headers = _retry_after(exc.retry_after)
                if isinstance(exc, E.QuotaError) and exc.retry_after is None:
                    # A hard limit (prompt too long for the policy) is the client's to fix: 400.
                    return error_response(400, str(exc), type="invalid_request_error", code="limit_exceeded")
            if status == 503:
                # Everything this API answers 503 for is expected to pass: say when to try again.
                headers = {"Retry-After": str(_UNAVAILABLE_RETRY_S)}
            return error_response(status, str(exc), type=type_, code=code, headers=headers)
    return error_response(500, str(exc), type="server_error", code="internal_error")


def _describe_validation(errors: Sequence[Any]) -> tuple[str, str | None, str]:
    """A one-line message, the offending parameter and a code from pydantic's error list."""
    if not errors:
        return "invalid request", None, "invalid_value"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        return "request body is not valid JSON", None, "invalid_json"
    if kind == "missing" and not loc:
        return "request body is required", None, "invalid_json"
    param = ".".join(loc) or None
    if kind == "extra_forbidden":
        return f"{param}: this parameter is not supported by this appliance", param, "unsupported_parameter"
    message = str(first.get("msg", "invalid value"))
    if kind == "value_error" and "not supported" in message:
        return f"{param}: {message.removeprefix('Value error, ')}", param, "unsupported_parameter"
    return (f"{param}: {message}" if param else message), param, "invalid_value"


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param, code = _describe_validation(exc.errors())
    return error_response(400, message, code=code, param=param)


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param, headers=exc.headers
    )


async def _on_enclave_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, E.EnclaveError)
    return enclave_error_response(exc)


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = {404: "not_found", 405: "method_not_allowed"}.get(status)
    message = (
        str(exc.detail) if status not in (404, 405) else f"no route for {request.method} {request.url.path}"
    )
    headers = dict(exc.headers or {})
    if status == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(status, message, code=code, headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method some operation takes at this path, from the OpenAPI document (which lists every
    route, however routers nest): Starlette names only the first matching route's, so a path served
    by a GET route and a PATCH route answered ``Allow: GET``."""
    methods: set[str] = set()
    path = request.url.path
    for template, item in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            methods |= {m.upper() for m in item if m in _HTTP_METHODS}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error", type="server_error", code="internal_error")


# Under this prefix errors are SCIM error messages (RFC 7644 3.12): IdPs' provisioning clients
# parse those, not OpenAI's envelope.
SCIM_PREFIX = "/scim/"
_SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def _scim_shaped(request: Request, response: JSONResponse) -> JSONResponse:
    if not request.url.path.startswith(SCIM_PREFIX):
        return response
    message = json.loads(bytes(response.body))["error"]["message"]
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    body = {"schemas": [_SCIM_ERROR], "status": str(response.status_code), "detail": message}
    return JSONResponse(body, status_code=response.status_code, headers=headers, media_type="application/scim+json")


def _shaped(handler: Any) -> Any:
    async def shaped(request: Request, exc: Exception) -> JSONResponse:
        return _scim_shaped(request, await handler(request, exc))

    return shaped


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _shaped(_on_validation))
    app.add_exception_handler(ApiError, _shaped(_on_api_error))
    app.add_exception_handler(E.EnclaveError, _shaped(_on_enclave_error))
    app.add_exception_handler(StarletteHTTPException, _shaped(_on_http_exception))
    app.add_exception_handler(Exception, _shaped(_on_unexpected))


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# What the OpenAPI document declares for each status a route may return.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _doc("Malformed JSON or an invalid value"),
    401: _doc("Missing, invalid, expired or revoked token"),
    403: _doc("The caller's role lacks the permission"),
    413: _doc("Request body too large"),
    503: _doc("The audit store, database or engine cannot serve the request"),
}
