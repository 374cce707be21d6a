"""``enclave serve --data DIR [--host H] [--port P] [--insecure-http]``: the appliance API.

Serves HTTPS with the certificate ``enclave init`` made; plain HTTP only on a loopback address and
only with ``--insecure-http``. Once it accepts connections it prints::

    ENCLAVE_URL=https://127.0.0.1:8443
    ENCLAVE_CA=/path/to/data/tls/ca.pem

so scripts and tests can pick them up. ``--port 0`` lets the OS choose a free port.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from appliance.api.runtime import open_runtime
from appliance.api.server import bind, exit_on_sigterm, run_loop, serve
from appliance.api.tls import ca_fingerprint, tls_files
from appliance.db.datadir import load_data_dir

__all__ = ["announce", "register"]


def announce(url: str, ca: str | None, extra: dict[str, str] | None = None) -> None:
    lines = [f"ENCLAVE_URL={url}"]
    if ca:
        lines.append(f"ENCLAVE_CA={ca}")
    lines += [f"{k}={v}" for k, v in (extra or {}).items()]
    print("\n".join(lines), flush=True)


def _run(args: argparse.Namespace) -> int:
    settings = load_data_dir(args.data)
    changes: dict[str, object] = {}
    if args.host is not None:
        changes["host"] = args.host
    if args.port is not None:
        changes["port"] = args.port
    if args.insecure_http:
        changes["insecure_http"] = True
    settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    tls = None if settings.insecure_http else tls_files(settings.tls_dir)
    listener = bind(settings.host, settings.port, tls=tls, insecure_http=settings.insecure_http)
    runtime = open_runtime(settings)
    for warning in runtime.warnings:
        print(f"enclave: warning: {warning}", file=sys.stderr)
    if tls is not None:
        print(f"TLS CA SHA-256 fingerprint: {ca_fingerprint(tls.ca_cert)}", flush=True)
    model = runtime.engine.model_id if runtime.engine else "none"
    print(f"model: {model}", flush=True)
    ca = str(tls.ca_cert) if tls else None
    try:
        exit_on_sigterm()
        run_loop(serve(runtime.app, listener, on_listening=lambda url: announce(url, ca)))
    finally:
        runtime.close()
    return 0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="DIR", help="data directory (default: $ENCLAVE_DATA or the platform's)"
    )
    parser.add_argument("--host", help="address to listen on (default: the settings', 127.0.0.1)")
    parser.add_argument("--port", type=_port, help="port (default: the settings', 8443; 0 = any free port)")
    parser.add_argument(
        "--insecure-http", action="store_true", help="plain HTTP instead of TLS (loopback addresses only)"
    )
    parser.set_defaults(func=_run)
