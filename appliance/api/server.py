"""Serving the app with uvicorn: HTTPS with the appliance's own certificate, or plain HTTP on loopback
only, and only when asked for (``insecure_http``).

The listening socket is bound here, before uvicorn starts, so ``port=0`` works (the OS picks a free
port and :attr:`Listener.url` names it) and a busy port is a one-line ConfigError rather than a log
line from deep inside uvicorn. Nothing here opens an outbound connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from appliance.api.conn_guard import ConnectionLimits, uvicorn_options
from appliance.api.tls import TlsFiles
from appliance.config import Settings
from shared.errors import ConfigError

__all__ = ["Listener", "bind", "exit_on_sigterm", "is_loopback", "run_in_thread", "run_loop", "serve"]

T = TypeVar("T")


SWITCH_INTERVAL_S = 0.0005


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Listener:
    sock: socket.socket
    host: str
    port: int
    tls: TlsFiles | None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        # Certificates name "localhost", not the wildcard address.
        if self.host in ("0.0.0.0", "::"):
            host = "localhost"
        return f"{scheme}://{host}:{self.port}"


def bind(host: str, port: int, *, tls: TlsFiles | None, insecure_http: bool) -> Listener:
    """Check the transport policy and bind the listening socket."""
    if tls is None:
        if not insecure_http:
            raise ConfigError("no TLS certificate given; plain HTTP needs --insecure-http (loopback only)")
        if not is_loopback(host):
            raise ConfigError(f"plain HTTP is allowed only on loopback, not on {host!r}; use TLS")
    elif not tls.exist():
        raise ConfigError(f"TLS files missing in {tls.server_cert.parent} (run `enclave init`)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio enables TCP_NODELAY only on sockets that say they are TCP,
    # and without it every streamed chunk after the first waits out the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return Listener(sock, host, sock.getsockname()[1], tls)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` clauses (closing the audit log) run.

    uvicorn re-raises the signal that stopped it once it has shut down; with the default handler a
    SIGTERM would then end the process before the caller could clean up.
    """

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def _http_implementation() -> str:
    """httptools (a C parser) where it imports, else h11, which behaves the same, slower."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop where it imports (a libuv loop with its own, faster TLS transport),
    else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _limits(app: Any) -> ConnectionLimits:
    state = getattr(getattr(app, "state", None), "enclave", None)
    s = state.settings if state is not None else Settings(data_dir=Path("."))
    return ConnectionLimits(
        max_header_bytes=s.http_max_header_bytes,
        header_timeout_s=s.http_header_timeout_s,
        body_timeout_s=s.http_body_timeout_s,
        max_per_address=s.http_max_connections_per_address,
    )


def _config(app: Any, listener: Listener, *, log_level: str) -> uvicorn.Config:
    kwargs: dict[str, Any] = uvicorn_options(_limits(app), _http_implementation())
    if listener.tls is not None:
        kwargs.update(ssl_certfile=str(listener.tls.server_cert), ssl_keyfile=str(listener.tls.server_key))
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level=log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
        backlog=2048,
        **kwargs,
    )
    config.load()
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    return config


async def serve(
    app: Any,
    listener: Listener,
    *,
    on_listening: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve until interrupted (SIGINT/SIGTERM); ``on_listening(url)`` once requests are accepted."""
    # The event loop shares the interpreter with the engine's and the audit writer's threads. With
    # the default 5 ms switch interval every hand-off from those threads (a token, a commit) can
    # wait up to 5 ms for the GIL, which shows directly in time to first token.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    server = uvicorn.Server(_config(app, listener, log_level=log_level))

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.02)
        if on_listening is not None:
            on_listening(listener.url)

    watcher = asyncio.create_task(announce())
    try:
        await server.serve(sockets=[listener.sock])
    finally:
        watcher.cancel()
        listener.sock.close()


@contextmanager
def run_in_thread(app: Any, listener: Listener, *, log_level: str = "warning") -> Iterator[str]:
    """Serve in a background thread (tests, benchmarks, ``enclave demo``); yields the URL once listening."""
    # uvicorn leaves signals alone off the main thread; this server stops through should_exit.
    server = uvicorn.Server(_config(app, listener, log_level=log_level))
    failed: list[BaseException] = []

    def run() -> None:
        try:
            run_loop(server.serve(sockets=[listener.sock]))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name="enclave-api", daemon=True)
    thread.start()
    try:
        while not server.started:
            if failed or not thread.is_alive():
                raise ConfigError(f"server did not start: {failed[0] if failed else 'exited'}")
            threading.Event().wait(0.02)
        yield listener.url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.sock.close()
