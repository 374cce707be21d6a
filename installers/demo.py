"""What ``scripts/demo`` runs: the appliance on a throwaway data directory, and the desktop client on it.

    python -m installers.demo [--no-desktop] [--port N]

It starts ``enclave demo`` in a subprocess and waits for the lines it prints once listening
(``ENCLAVE_URL=``, ``ENCLAVE_CA=``, ``ENCLAVE_TOKEN=``). Then, unless ``--no-desktop`` is given or
there is no display (no ``DISPLAY``/``WAYLAND_DISPLAY`` and no ``QT_QPA_PLATFORM``), it starts the
desktop client against that appliance, passing the three values in its environment. It prints how
to connect and runs until Ctrl-C or SIGTERM — or until the desktop window is closed — and then
stops both, the client first. If the appliance exits on its own, the client stays open (it shows
the appliance is down and keeps what the user typed) until the user closes it.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import IO

__all__ = ["Connection", "display_available", "main", "read_connection"]

KEYS = ("ENCLAVE_URL", "ENCLAVE_CA", "ENCLAVE_TOKEN")
# Building the demo model and starting the server can take a while on a small machine.
STARTUP_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 20.0
# The same entry point as the `enclave-desktop` command, without relying on the script being on PATH.
DESKTOP_MAIN = "import sys; from desktop.app import main; sys.exit(main())"


@dataclass(frozen=True)
class Connection:
    url: str
    ca: str
    token: str

    def env(self) -> dict[str, str]:
        return {"ENCLAVE_URL": self.url, "ENCLAVE_CA": self.ca, "ENCLAVE_TOKEN": self.token}


class DemoError(Exception):
    """The demo could not start; str() says why."""


def display_available(environ: Mapping[str, str]) -> bool:
    """Whether a Qt window can be shown: a display server, or a Qt platform chosen explicitly."""
    return any(environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def _pump(stream: IO[str], lines: queue.Queue[str | None], prefix: str) -> None:
    """Relay a child's output to ours (prefixed) and hand each line to the waiter; None at EOF."""
    for line in stream:
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()
        lines.put(line.rstrip("\n"))
    lines.put(None)


def read_connection(
    lines: queue.Queue[str | None], *, deadline: float, stop: threading.Event | None = None
) -> Connection | None:
    """Collect the ENCLAVE_* lines; None if ``stop`` is set first.

    DemoError if the appliance's output ends (it exited) or the deadline passes first.
    """
    found: dict[str, str] = {}
    while len(found) < len(KEYS):
        if stop is not None and stop.is_set():
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            missing = ", ".join(k for k in KEYS if k not in found)
            raise DemoError(f"the appliance did not print {missing} in {STARTUP_TIMEOUT_S:.0f}s")
        try:
            # Short waits, so that Ctrl-C during start-up is honoured promptly.
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            raise DemoError("the appliance exited before it was ready (its output is above)")
        key, sep, value = line.strip().partition("=")
        if sep and key in KEYS:
            found[key] = value
    return Connection(url=found["ENCLAVE_URL"], ca=found["ENCLAVE_CA"], token=found["ENCLAVE_TOKEN"])


def _stop(proc: subprocess.Popen[str] | None, name: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"demo: {name} did not stop in {STOP_TIMEOUT_S:.0f}s; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()


def _spawn(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    # A session of its own: Ctrl-C reaches only this process, which then stops the children in order.
    return subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        env=dict(env),
        start_new_session=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description="Enclave appliance + desktop client demo"
    )
    parser.add_argument("--no-desktop", action="store_true", help="run the appliance only")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    appliance: subprocess.Popen[str] | None = None
    desktop: subprocess.Popen[str] | None = None
    try:
        appliance = _spawn([sys.executable, "-m", "appliance", "demo", "--port", str(args.port)], env)
        print(f"demo: appliance pid {appliance.pid}", flush=True)
        lines: queue.Queue[str | None] = queue.Queue()
        assert appliance.stdout is not None
        threading.Thread(target=_pump, args=(appliance.stdout, lines, ""), daemon=True).start()
        conn = read_connection(lines, deadline=time.monotonic() + STARTUP_TIMEOUT_S, stop=stop)
        if conn is None:
            return 130
        want_desktop = not args.no_desktop and display_available(os.environ)
        if want_desktop:
            # --url/--ca: the client opens this appliance's profile (or a new one), not a previous demo's.
            desktop = _spawn([sys.executable, "-c", DESKTOP_MAIN, "--url", conn.url, "--ca", conn.ca],
                             {**env, **conn.env()})
            print(f"demo: desktop pid {desktop.pid}", flush=True)
            assert desktop.stdout is not None
            threading.Thread(
                target=_pump, args=(desktop.stdout, queue.Queue(), "desktop: "), daemon=True
            ).start()
        _print_how_to_connect(conn, desktop_started=want_desktop, asked_no_desktop=args.no_desktop)
        code = _run_until_done(appliance, desktop, stop)
        if desktop is not None and desktop.poll() is None and not stop.is_set():
            # The appliance died under the client: the user's typed work is in that window, so it stays
            # open (it shows the appliance is down) until the user closes it or presses Ctrl-C.
            print("demo: the desktop client stays open so nothing typed in it is lost; close it (or press "
                  "Ctrl-C) to finish", flush=True)
            while desktop.poll() is None and not stop.wait(0.5):
                pass
        return code
    except DemoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop(desktop, "the desktop client")  # already closed by the user unless Ctrl-C/SIGTERM came first
        _stop(appliance, "the appliance")


def _run_until_done(
    appliance: subprocess.Popen[str], desktop: subprocess.Popen[str] | None, stop: threading.Event
) -> int:
    while not stop.wait(0.5):
        if appliance.poll() is not None:
            print(f"demo: error: the appliance exited (code {appliance.returncode})", file=sys.stderr)
            return 1
        if desktop is not None and desktop.poll() is not None:
            print("demo: the desktop client closed; stopping the appliance", flush=True)
            return 0 if desktop.returncode == 0 else 1
    print("demo: stopping", flush=True)
    return 0


def _print_how_to_connect(conn: Connection, *, desktop_started: bool, asked_no_desktop: bool) -> None:
    if desktop_started:
        client = (
            "The desktop client is open with this server filled in: confirm the CA fingerprint to connect."
        )
    elif asked_no_desktop:
        client = "Desktop client not started (--no-desktop)."
    else:
        client = "Desktop client not started: no display (set DISPLAY or WAYLAND_DISPLAY)."
    print(
        "\n"
        f"Enclave demo is running at {conn.url}\n"
        f"  CA certificate: {conn.ca}\n"
        f"  token:          {conn.token}\n"
        f"  {client}\n"
        "  Connect a client yourself:\n"
        f"    ENCLAVE_URL={conn.url} ENCLAVE_CA={conn.ca} ENCLAVE_TOKEN={conn.token} enclave-desktop\n"
        f"    curl --cacert {conn.ca} -H 'Authorization: Bearer {conn.token}' {conn.url}/v1/models\n"
        "  Ctrl-C stops it (the data directory is temporary).\n",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
