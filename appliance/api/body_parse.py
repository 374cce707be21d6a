"""Large JSON request bodies parsed and validated in a helper process, not on the event loop.

A 4 MB prompt's body took ~145 ms of the event loop on a loaded 2-core box (``json.loads``, then
pydantic), during which no other request — health checks included — was served. A worker thread
would not help: the JSON decoder and pydantic-core hold the GIL for the whole parse, so the loop
waits for the GIL instead. A body of at least :data:`OFF_LOOP_BYTES` on an
:class:`OffLoopBodyRoute` is therefore handed, as bytes, to a one-process pool that parses it and
validates it against the route's body model. The parent gets back the parsed object (unpickling a
few large strings is a copy) or the validation errors, without their inputs; FastAPI's own
validation of an object already known to be valid then costs microseconds. Smaller bodies keep the
ordinary path (a process round trip costs more than parsing them). The body's size was already
bounded (``max_body_bytes``, before a byte of it is parsed) by the edge middleware.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import anyio
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

__all__ = ["OFF_LOOP_BYTES", "BodyParser", "OffLoopBodyRoute"]

OFF_LOOP_BYTES = 256 * 1024
log = logging.getLogger(__name__)

Errors = list[dict[str, Any]]


def parse_body(body: bytes, model: type[BaseModel] | None) -> tuple[Any, Errors | None]:
    """(parsed JSON, None) or (None, errors shaped as FastAPI reports them). Runs in the helper."""
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        position = exc.pos if isinstance(exc, json.JSONDecodeError) else exc.start
        return None, [
            {"type": "json_invalid", "loc": ("body", position), "msg": "JSON decode error", "input": {}}
        ]
    if model is not None:
        try:
            model.model_validate(value)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False, include_context=False)
            return None, [{**e, "loc": ("body", *e["loc"])} for e in errors]
    return value, None


class BodyParser:
    """The helper process: started by :meth:`start` (or the first large body), stopped by :meth:`close`."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn, not fork: the server has threads (ONNX Runtime's, the audit writer's)
                # that a forked child would inherit half-way through whatever they were doing.
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
            return self._pool

    def start(self) -> None:
        """Start the helper and wait until it answers (a server calls this before it listens;
        otherwise the first large body starts it)."""
        self._ensure().submit(parse_body, b"{}", None).result()

    async def parse(self, body: bytes, model: type[BaseModel] | None) -> tuple[Any, Errors | None] | None:
        """The helper's verdict, or None when the helper is gone (the caller parses as usual)."""
        # Started (and each job queued) from a worker thread: starting the helper process and
        # handing it megabytes both take the GIL for a while, which the loop must not wait out.
        pool = await anyio.to_thread.run_sync(self._ensure)
        try:
            future = await anyio.to_thread.run_sync(pool.submit, parse_body, body, model)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            # Killed (out of memory, an operator): a new one next time; this body the usual way.
            log.warning("body parser: helper process died; parsing this request on the event loop")
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            return None

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None


class _Parsed(Request):
    """The request with its body read and parsed already; what FastAPI's handler reads."""

    def __init__(self, scope: Scope, receive: Receive, raw: bytes, value: Any) -> None:
        super().__init__(scope, receive)
        self._raw, self._value = raw, value

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._value


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


class OffLoopBodyRoute(APIRoute):
    """A route whose large JSON bodies are parsed and validated by the app's :class:`BodyParser`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        annotation = self.body_field.field_info.annotation if self.body_field is not None else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None

        async def route(request: Request) -> Response:
            raw = await request.body()
            if len(raw) < OFF_LOOP_BYTES or not _is_json(request):
                return await handler(request)
            parser: BodyParser = request.app.state.enclave.body_parser
            verdict = await parser.parse(raw, model)
            if verdict is None:
                return await handler(request)
            value, errors = verdict
            if errors is not None:
                raise RequestValidationError(errors)
            return await handler(_Parsed(request.scope, request.receive, raw, value))

        return route
