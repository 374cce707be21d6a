"""One HTTP connection's limits, over real sockets (issue 12 item 11): idle after connecting,
a head or a body trickling in, an oversized head, and too many connections from one address.
Timeouts are set small here so each case takes about a second."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.api.server import bind, run_in_thread
from tests.appliance.api.conftest import build_appliance


@pytest.fixture
def server(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[str, int]]:
    yield from _serve(tmp_path, sqlite_url, header_timeout_s=0.5)


@pytest.fixture
def patient_server(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[str, int]]:
    # Kept-alive connections must stay open while the test opens a third one, however slow the
    # machine: a head deadline of 0.5 s could close one first and free its slot.
    yield from _serve(tmp_path, sqlite_url, header_timeout_s=30.0)


def _serve(tmp_path: Path, sqlite_url: str, *, header_timeout_s: float) -> Iterator[tuple[str, int]]:
    a = build_appliance(
        tmp_path,
        sqlite_url,
        insecure_http=True,
        http_header_timeout_s=header_timeout_s,
        http_body_timeout_s=0.5,
        http_max_header_bytes=16 * 1024,
        http_max_connections_per_address=2,
    )
    try:
        listener = bind("127.0.0.1", 0, tls=None, insecure_http=True)
        with run_in_thread(a.app, listener):
            host, port = listener.sock.getsockname()[:2]
            yield host, port
    finally:
        a.close()


def _connect(addr: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(addr, timeout=10)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Reads until the server closes (True) or 10 s pass (False); a reset counts as closed."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
            if data.startswith(b"HTTP/1.1 200"):
                return False
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _trickle(sock: socket.socket, data: bytes) -> bool:
    """Sends ``data`` a byte every 0.1 s; True if the server closed the connection before the end."""
    for i in range(len(data)):
        try:
            sock.sendall(data[i : i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return True
        time.sleep(0.1)
    return False


def test_a_connection_that_never_sends_is_closed(server: tuple[str, int]) -> None:
    with _connect(server) as sock:
        assert _closed_by_server(sock)


def test_a_head_trickling_in_is_cut_off(server: tuple[str, int]) -> None:
    with _connect(server) as sock:
        head = b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + b"x-pad: " + b"a" * 200 + b"\r\n\r\n"
        _trickle(sock, head)
        assert _closed_by_server(sock)


def test_a_body_trickling_in_is_cut_off(server: tuple[str, int]) -> None:
    with _connect(server) as sock:
        body = b'{"username": "dev", "password": "' + b"p" * 100 + b'"}'
        sock.sendall(
            b"POST /v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
        )
        _trickle(sock, body)
        assert _closed_by_server(sock)


def test_an_oversized_head_gets_431(server: tuple[str, int]) -> None:
    with _connect(server) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (256 * 1024) + b"\r\n\r\n")
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
        assert reply.startswith(b"HTTP/1.1 431"), reply[:100]


def test_connections_per_address_are_capped(patient_server: tuple[str, int]) -> None:
    server = patient_server
    first, second = _connect(server), _connect(server)
    try:
        for sock in (first, second):  # both open and served (kept alive)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        with _connect(server) as third:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                third.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            assert _closed_by_server(third)
    finally:
        first.close()
        second.close()
