"""Forwarding to a syslog collector: RFC 5424 messages over TCP with RFC 6587 octet counting.

Each committed record, in seq order, becomes one message::

    <PRI>1 <record time> <hostname> enclave - audit - \\xEF\\xBB\\xBF<JSONL export line>

PRI is facility 13 (log audit) with severity informational for ``success``, warning for
``failure``/``denied``, notice otherwise. The message body is the JSONL export line, so the
collector holds every chain field and can re-verify. Framing is ``<octet count> SP <message>``,
which (unlike newline framing) survives any byte in the message.

The forwarder tails the database rather than hooking the writer, so records appended by other
processes (the CLI, other replicas) are sent too; run it on one replica, or let the collector drop
repeats by ``seq``. Its position can be kept in a file so a restart resumes where it stopped.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from appliance.audit.checkpoints import Checkpoint
from appliance.audit.query import format_record
from appliance.audit.store import RowTuple, snapshot
from appliance.config import Settings
from shared.errors import ConfigError

__all__ = ["SyslogForwarder", "format_checkpoint", "format_syslog", "parse_address"]

_FACILITY_LOG_AUDIT = 13
_BOM = "\ufeff"


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"audit_syslog must be host:port, got {text!r}")
    return host.strip("[]"), int(port)


def _severity(outcome: str) -> int:
    return 6 if outcome == "success" else 4 if outcome in ("failure", "denied") else 5


def format_syslog(row: RowTuple, hostname: str) -> bytes:
    """One octet-counted RFC 5424 frame for a stored record."""
    pri = _FACILITY_LOG_AUDIT * 8 + _severity(row[5])
    host = "".join(c for c in hostname if 33 <= ord(c) <= 126)[:255] or "-"
    message = f"<{pri}>1 {row[1]} {host} enclave - audit - {_BOM}{format_record('jsonl', row)}".encode()
    return str(len(message)).encode("ascii") + b" " + message


def format_checkpoint(cp: Checkpoint, hostname: str) -> bytes:
    """The frame of a signed checkpoint (MSGID ``checkpoint``): a copy of it off the box, which is
    what defeats someone who can rewrite both the database and the data directory."""
    host = "".join(c for c in hostname if 33 <= ord(c) <= 126)[:255] or "-"
    message = f"<{_FACILITY_LOG_AUDIT * 8 + 6}>1 {cp.time} {host} enclave - checkpoint - {_BOM}{cp.to_json().strip()}"
    encoded = message.encode()
    return str(len(encoded)).encode("ascii") + b" " + encoded


class SyslogForwarder:
    def __init__(
        self,
        engine: Engine,
        address: str,
        *,
        after_seq: int = 0,
        cursor_file: Path | None = None,
        hostname: str | None = None,
        poll_s: float = 1.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.host, self.port = parse_address(address)
        self.cursor_file = cursor_file
        self.hostname = hostname or socket.gethostname()
        self._poll = poll_s
        self._timeout = timeout_s
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent_seq = self._read_cursor(after_seq)
        # Checkpoints sent this run (after a restart the latest is sent once more: harmless).
        self.sent_checkpoint = 0

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> SyslogForwarder | None:
        if not settings.audit_syslog:
            return None
        cursor = settings.data_dir / "audit_syslog.cursor"
        return cls(engine, settings.audit_syslog, cursor_file=cursor)

    def _read_cursor(self, default: int) -> int:
        if self.cursor_file is None or not self.cursor_file.exists():
            return default
        try:
            return int(self.cursor_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            raise ConfigError(
                f"{self.cursor_file}: unreadable syslog position; delete it to resend all"
            ) from None

    def _write_cursor(self) -> None:
        if self.cursor_file is None:
            return
        fd, tmp = tempfile.mkstemp(prefix=".syslog-cursor-", dir=self.cursor_file.parent)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{self.sent_seq}\n")
        os.replace(tmp, self.cursor_file)

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self._timeout)
        return self._sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def forward_pending(self, *, limit: int = 10_000) -> int:
        """Send records after ``sent_seq`` (up to ``limit``); returns how many were sent.

        Raises OSError when the collector cannot be reached; the position then stays at the last
        record the collector accepted, so nothing is skipped.
        """
        with snapshot(self.engine) as snap:
            rows = [r for _, r in zip(range(limit), snap.events(self.sent_seq), strict=False)]
            stored = [Checkpoint.from_row(r) for r in snap.checkpoints()]
        latest = max(stored, key=lambda c: c.seq, default=None)
        if not rows and (latest is None or latest.seq <= self.sent_checkpoint):
            return 0
        try:
            sock = self._connect()
            for row in rows:
                sock.sendall(format_syslog(row, self.hostname))
                self.sent_seq = int(row[0])
            # The checkpoint after the records it covers, so the collector can check them at once.
            if latest is not None and self.sent_checkpoint < latest.seq <= self.sent_seq:
                sock.sendall(format_checkpoint(latest, self.hostname))
                self.sent_checkpoint = latest.seq
        except OSError:
            self._disconnect()
            raise
        finally:
            self._write_cursor()
        return len(rows)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.forward_pending() and not self._stop.is_set():
                    pass
            except (OSError, SQLAlchemyError):
                pass  # collector or database away: retry at the next poll, from the same position
            self._stop.wait(self._poll)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="enclave-audit-syslog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._disconnect()
