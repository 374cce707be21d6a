"""Network guard for subprocesses under test: every non-loopback connection attempt fails loudly.

Put this directory on ``PYTHONPATH`` and set ``ENCLAVE_NETGUARD_LOG`` to a file: Python imports this
module at start-up, and an audit hook then sees every ``socket.connect`` / ``socket.getaddrinfo`` /
``socket.sendto``. Loopback addresses and Unix sockets pass; anything else is appended to the log
(one JSON line: event, address, pid) and refused with ``ConnectionRefusedError``. The first line of
the log, written at start-up, proves the guard was active in that process.

This is a test double; product code never imports it (tests/helpers/ only).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
from typing import Any

_LOG = os.environ.get("ENCLAVE_NETGUARD_LOG", "")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _write(record: dict[str, Any]) -> None:
    if not _LOG:
        return
    # O_APPEND writes of one short line are atomic enough across the processes of one test.
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _is_loopback(host: Any) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port) resolves to local addresses for bind()
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%", 1)[0]
    if host.lower() in _LOOPBACK_NAMES or host in ("", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost: resolving it is already an outside lookup


def _host_of(address: Any) -> Any:
    if isinstance(address, tuple) and address:
        return address[0]
    return address


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" or event == "socket.sendto":
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) == getattr(socket, "AF_UNIX", -1):
            return
        if isinstance(address, (str, bytes)):
            return  # a Unix socket path
        host = _host_of(address)
    elif event == "socket.getaddrinfo":
        host = args[0]
    else:
        return
    if _is_loopback(host):
        return
    _write({"event": event, "address": repr(host), "pid": os.getpid()})
    raise ConnectionRefusedError(f"netguard: outbound connection attempt to {host!r} ({event}) refused")


_write({"event": "netguard.active", "pid": os.getpid(), "argv": sys.orig_argv[:4]})
sys.addaudithook(_hook)
