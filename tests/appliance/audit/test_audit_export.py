"""Exports (JSONL, CEF) carry the chain, so a third party re-verifies them; the `enclave audit`
commands end to end on a data directory made by `enclave init`."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from appliance.audit import (
    AuditEvent,
    AuditKeys,
    AuditLog,
    load_public_key,
    read_checkpoint_file,
    verify_export,
)
from appliance.audit.query import _cef_value, cef_row
from appliance.cli import main
from appliance.config import load_settings
from appliance.db.engine import make_engine
from tests.helpers.audit_tamper import tampering

AWKWARD = 'pipe | equals = backslash \\ newline \n return \r tab \t unicode ünï€ 🙂 quote " end\\'


def _fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append(
            AuditEvent(
                action="generation.completed" if i % 2 else "auth.login.failed",
                actor=f"user{i} {AWKWARD}",
                target=AWKWARD,
                outcome="success" if i % 2 else "failure",
                request_id=f"req-{i}",
                client_address="10.1.2.3" if i % 3 else "2001:db8::1",
                details={"text": AWKWARD, "n": i, "nested": {"list": [True, None, -1]}},
                content={"prompt": AWKWARD} if i % 4 == 0 else None,
                capture="digest",
            )
        )


@pytest.mark.parametrize("fmt", ["jsonl", "cef"])
def test_an_export_reverifies_off_the_box_with_only_the_public_key(
    log: AuditLog, keys: AuditKeys, fmt: str
) -> None:
    _fill(log, 9)
    cp = log.checkpoint()
    lines = list(log.export(fmt))
    assert len(lines) == 9 and all("\n" not in line and "\r" not in line for line in lines)
    public_only = AuditKeys(public_key=keys.public_key)
    report = verify_export(lines, keys=public_only, checkpoint=cp)
    assert report.ok and report.valid == 9 and report.last_checkpoint == cp

    # One changed character anywhere in a record is found at that record.
    i = 4
    tampered = [*lines[:i], lines[i].replace("user4", "user5"), *lines[i + 1 :]]
    bad = verify_export(tampered, keys=public_only, checkpoint=cp)
    assert bad.problem is not None and (bad.problem.seq, bad.problem.kind) == (5, "modified")
    # A cut export is found against the checkpoint.
    cut = verify_export(lines[:6], keys=public_only, checkpoint=cp)
    assert cut.problem is not None and (cut.problem.seq, cut.problem.kind) == (7, "truncated")


def test_jsonl_lines_hold_every_chain_field(log: AuditLog) -> None:
    _fill(log, 2)
    first, second = (json.loads(line) for line in log.export("jsonl"))
    assert set(first) == {
        "seq", "time", "actor", "action", "target", "outcome", "request_id",
        "client_address", "details", "content", "prev_hash", "hash",
    }  # fmt: skip
    assert first["details"]["text"] == AWKWARD
    assert second["prev_hash"] == first["hash"]


def test_cef_lines_are_well_formed(log: AuditLog) -> None:
    _fill(log, 3)
    lines = list(log.export("cef"))
    header = lines[0].split("|")
    assert header[:4] == ["CEF:0", "Enclave", "Enclave Appliance", header[3]]
    assert header[4] == "auth.login.failed" and header[6].startswith("7")
    assert "src=2001:db8::1" in lines[0] and "externalId=1 " in lines[0]
    assert "cs6Label=hash" in lines[0]


def test_an_export_since_a_time_is_a_verifiable_piece_of_the_chain(log: AuditLog, keys: AuditKeys) -> None:
    _fill(log, 3)
    middle = dt.datetime.now(dt.UTC)
    _fill(log, 3)
    lines = list(log.export("jsonl", since=middle))
    assert [json.loads(line)["seq"] for line in lines] == [4, 5, 6]
    assert verify_export(lines, keys=keys, partial=True).ok
    # Taken for a whole export, it is missing its beginning.
    whole = verify_export(lines, keys=keys)
    assert whole.problem is not None and (whole.problem.seq, whole.problem.kind) == (1, "missing")
    assert list(log.export("jsonl", since=middle + dt.timedelta(days=1))) == []


# -- the commands, end to end -----------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("audit-cli") / "data"
    assert main(["init", "--data", str(data)]) == 0
    settings = load_settings(data)
    engine = make_engine(settings.db_url)
    with AuditLog.from_settings(settings, engine) as log:
        _fill(log, 12)
    engine.dispose()
    return data


def test_cli_verify_prints_the_count_and_the_last_checkpoint(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = data_dir.parent / "cp.json"
    assert main(["audit", "checkpoint", "--data", str(data_dir), "--export", str(out_file)]) == 0
    cp = read_checkpoint_file(out_file)
    assert main(["audit", "verify", "--data", str(data_dir), "--checkpoint", str(out_file)]) == 0
    out = capsys.readouterr().out
    # init itself recorded its changes (default team, first admin) before our 12 events.
    total = cp.seq
    assert f"{total}/{total} events valid" in out
    assert f"last signed checkpoint: seq {cp.seq}" in out


@pytest.mark.parametrize("fmt", ["jsonl", "cef"])
def test_cli_export_reverifies_with_the_cli_off_the_box(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    export = tmp_path / f"audit.{fmt}"
    cp_file = tmp_path / "cp.json"
    assert main(["audit", "checkpoint", "--data", str(data_dir), "--export", str(cp_file)]) == 0
    assert main(["audit", "export", "--data", str(data_dir), "--format", fmt, "--out", str(export)]) == 0
    public = tmp_path / "audit_signing.pub"
    shutil.copy(data_dir / "keys" / "audit_signing.pub", public)
    capsys.readouterr()
    args = [
        "audit",
        "verify",
        "--export",
        str(export),
        "--public-key",
        str(public),
        "--checkpoint",
        str(cp_file),
    ]
    assert main(args) == 0
    count = len(export.read_text(encoding="utf-8").split("\n")) - 1
    assert f"{count}/{count} events valid" in capsys.readouterr().out
    assert load_public_key(public)


def test_cli_export_to_stdout_and_since(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert (
        main(["audit", "export", "--data", str(data_dir), "--format", "jsonl", "--since", "2000-01-01"]) == 0
    )
    lines = capsys.readouterr().out.split("\n")[:-1]
    assert json.loads(lines[0])["seq"] == 1
    assert (
        main(
            ["audit", "export", "--data", str(data_dir), "--format", "jsonl", "--since", "2999-01-01T00:00Z"]
        )
        == 0
    )
    assert capsys.readouterr().out == ""


def test_cli_verify_names_the_first_bad_seq(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    engine = make_engine(load_settings(copy).db_url)
    with tampering(engine) as conn:
        conn.execute(text("UPDATE audit_events SET outcome = 'success' WHERE seq = 5"))
    engine.dispose()
    capsys.readouterr()
    assert main(["audit", "verify", "--data", str(copy)]) == 1
    captured = capsys.readouterr()
    assert "enclave: error: audit log does not verify: seq 5: modified" in captured.err
    assert "4/" in captured.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit", "export", "--format", "jsonl", "--since", "yesterday"], "is not an ISO 8601 time"),
        (["audit", "export", "--format", "jsonl", "--out", "/nonexistent-dir/x.jsonl"], "cannot write"),
        (["audit", "verify", "--checkpoint", "/nonexistent-cp.json"], "cannot read checkpoint"),
        (["audit", "verify", "--export", "/nonexistent.jsonl"], "needs --public-key"),
    ],
)
def test_cli_bad_input_is_one_line(
    data_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    capsys.readouterr()
    assert (
        main([*args, "--data", str(data_dir)] if args[1] != "verify" or "--export" not in args else args) == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("enclave: error: ") and message in err and err.count("\n") == 1


def test_cli_refuses_a_directory_that_is_not_initialised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--data", str(tmp_path)]) == 1
    assert "not an Enclave data directory" in capsys.readouterr().err


def test_cli_refuses_a_checkpoint_file_that_is_not_one(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "cp.json"
    bogus.write_text('{"seq": "x"}', encoding="utf-8")
    assert main(["audit", "verify", "--data", str(data_dir), "--checkpoint", str(bogus)]) == 1
    assert "not a checkpoint" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], AuditKeys]:
    from appliance.db import migrate

    url = f"sqlite:///{tmp_path_factory.mktemp('audit-export') / 'enclave.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    keys = AuditKeys.generate()
    with AuditLog(engine, keys) as log:
        _fill(log, 12)
        lines = list(log.export("jsonl"))
    engine.dispose()
    return lines, keys


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_third_party_finds_every_kind_of_edit_to_an_export(
    exported: tuple[list[str], AuditKeys], data: st.DataObject
) -> None:
    lines, keys = exported
    n = len(lines)
    records = [json.loads(line) for line in lines]
    kind = data.draw(st.sampled_from(["modified", "missing", "reordered", "inserted"]))
    i = data.draw(st.integers(1, n - 1))  # 1-based position; the last line is left for the head check
    if kind == "modified":
        field = data.draw(st.sampled_from(["actor", "target", "outcome", "request_id", "details", "time"]))
        records[i - 1][field] = {"forged": True} if field == "details" else records[i - 1][field] + "!"
        expected = (i, "modified")
    elif kind == "missing":
        del records[i - 1]
        expected = (i, "missing")
    elif kind == "reordered":
        j = data.draw(st.integers(i + 1, n))
        records[i - 1], records[j - 1] = records[j - 1], records[i - 1]
        for seq, record in enumerate(records, 1):
            record["seq"] = seq
        expected = (i, "reordered")
    else:
        forged = dict(records[i - 1], actor="mallory", hash="e" * 64, prev_hash="f" * 64)
        records.insert(i - 1, forged)
        for seq, record in enumerate(records, 1):
            record["seq"] = seq
        expected = (i, "inserted")
    report = verify_export([json.dumps(r, ensure_ascii=False) for r in records], keys=keys)
    assert report.problem is not None
    assert (report.problem.seq, report.problem.kind) == expected, str(report.problem)


# No NUL: PostgreSQL text cannot hold one (SQLite can; the unit check below covers it).
CONTROLS = "esc \x1b[31m bel \x07 bs \x08 del \x7f nel \x85 tab \t ls \u2028 literal \\u001b end"


def test_cef_escapes_control_characters_and_still_verifies(log: AuditLog, keys: AuditKeys) -> None:
    """Issue 12 item 12: a user name with ESC/BEL/NUL went raw into CEF (JSONL escapes them)."""
    log.append(AuditEvent(action="auth.login.failed", actor=CONTROLS, target=CONTROLS, outcome="failure"))
    cp = log.checkpoint()
    (line,) = list(log.export("cef"))
    assert not [ch for ch in line if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029"]
    assert "\\u001b[31m" in line and "\\u0008" in line and "\\\\u001b" in line
    row = cef_row(line, "line 1")
    assert row[2] == CONTROLS and row[4] == CONTROLS
    assert verify_export([line], keys=AuditKeys(public_key=keys.public_key), checkpoint=cp).ok


def test_cef_escapes_nul() -> None:
    assert _cef_value("a\x00b") == "a\\u0000b"
