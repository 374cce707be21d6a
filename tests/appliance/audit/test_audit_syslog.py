"""Forwarding to a real RFC 5424 collector over TCP on 127.0.0.1 (octet-counted frames)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from appliance.audit import AuditEvent, AuditKeys, AuditLog, verify_export
from appliance.audit.syslog import SyslogForwarder, parse_address
from shared.errors import ConfigError
from tests.helpers.syslog_collector import SyslogCollector

# RFC 5424: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD SP MSG
FRAME = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (?P<host>[!-~]{1,255}) "
    r"enclave - audit - \ufeff(?P<msg>.*)",
    re.DOTALL,
)


@pytest.fixture
def collector() -> Iterator[SyslogCollector]:
    c = SyslogCollector()
    yield c
    c.close()


def _wait_for(predicate: object, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_records_reach_the_collector_in_order_and_reverify(
    log: AuditLog, keys: AuditKeys, collector: SyslogCollector, tmp_path: Path
) -> None:
    for n in range(5):
        log.append(
            AuditEvent(
                action="auth.login.failed" if n == 2 else "auth.login.ok",
                actor=f"u{n}",
                outcome="failure" if n == 2 else "success",
                details={"text": "line\nbreak 🙂"},
            )
        )
    cursor = tmp_path / "syslog.cursor"
    forwarder = SyslogForwarder(log.engine, collector.address, cursor_file=cursor, hostname="appliance-1")
    assert forwarder.forward_pending() == 5
    assert forwarder.forward_pending() == 0  # nothing twice
    log.append(AuditEvent(action="auth.logout", actor="u0"))
    forwarder.start()
    _wait_for(lambda: len(collector.messages()) == 6)
    forwarder.stop()
    assert cursor.read_text() == "6\n"

    messages = [FRAME.fullmatch(f) for f in collector.messages()]
    assert all(messages)
    pris = [int(m["pri"]) for m in messages]  # type: ignore[index]
    assert pris == [13 * 8 + 6, 13 * 8 + 6, 13 * 8 + 4, 13 * 8 + 6, 13 * 8 + 6, 13 * 8 + 6]
    assert {m["host"] for m in messages} == {"appliance-1"}  # type: ignore[index]
    bodies = [m["msg"] for m in messages]  # type: ignore[index]
    assert [json.loads(b)["seq"] for b in bodies] == [1, 2, 3, 4, 5, 6]
    assert verify_export(bodies, keys=keys).ok


def test_a_down_collector_loses_nothing(
    sqlite_log: AuditLog, collector: SyslogCollector, tmp_path: Path
) -> None:
    sqlite_log.append(AuditEvent(action="auth.login.ok", actor="a"))
    dead = socket.create_server(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens here now
    cursor = tmp_path / "cursor"
    forwarder = SyslogForwarder(sqlite_log.engine, f"127.0.0.1:{port}", cursor_file=cursor)
    with pytest.raises(OSError):
        forwarder.forward_pending()
    assert forwarder.sent_seq == 0
    sqlite_log.append(AuditEvent(action="auth.login.ok", actor="b"))
    # Restarted against a live collector, it resumes from its saved position.
    resumed = SyslogForwarder(sqlite_log.engine, collector.address, cursor_file=cursor)
    assert resumed.forward_pending() == 2
    resumed.stop()
    _wait_for(lambda: len(collector.messages()) == 2)
    assert len(collector.messages()) == 2


@pytest.mark.parametrize("bad", ["collector", "host:", ":514", "host:99999", "host:x"])
def test_bad_addresses_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_address(bad)


def test_ipv6_address() -> None:
    assert parse_address("[::1]:6514") == ("::1", 6514)


def test_from_settings_is_off_unless_configured(sqlite_engine: Engine, tmp_path: Path) -> None:
    from appliance.config import load_settings

    assert SyslogForwarder.from_settings(load_settings(tmp_path, environ={}), sqlite_engine) is None
    on = load_settings(tmp_path, environ={"ENCLAVE_AUDIT_SYSLOG": "127.0.0.1:6514"})
    forwarder = SyslogForwarder.from_settings(on, sqlite_engine)
    assert forwarder is not None and forwarder.port == 6514


CHECKPOINT_FRAME = re.compile(r"<110>1 \S+ appliance-1 enclave - checkpoint - \ufeff(?P<msg>.*)", re.DOTALL)


def test_signed_checkpoints_reach_the_collector_after_their_records(
    sqlite_log: AuditLog, keys: AuditKeys, collector: SyslogCollector
) -> None:
    """Issue 12 item 7: the latest checkpoint also leaves the box when syslog is configured."""
    for n in range(3):
        sqlite_log.append(AuditEvent(action="auth.login.ok", actor=f"u{n}"))
    cp = sqlite_log.checkpoint()
    forwarder = SyslogForwarder(sqlite_log.engine, collector.address, hostname="appliance-1")
    assert forwarder.forward_pending() == 3
    assert forwarder.forward_pending() == 0  # the checkpoint is sent once
    _wait_for(lambda: len(collector.messages()) == 4)
    frames = collector.messages()
    assert len(frames) == 4
    match = CHECKPOINT_FRAME.fullmatch(frames[3])
    assert match is not None, frames[3]
    from appliance.audit.checkpoints import Checkpoint

    sent = Checkpoint.from_mapping(json.loads(match["msg"]))
    assert sent == cp and sent.signature_valid(keys)
