"""``enclave user ...``: changes are audited in the same transaction; bad input changes nothing."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from appliance.db.engine import make_engine
from tests.helpers.appliance_cli import one_line_error, run_cli


@pytest.fixture
def data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    site = tmp_path / "site"
    assert run_cli(capsys, ["init", "--data", str(site)]).code == 0
    return site


def _audit_actions(data: Path) -> list[str]:
    engine = make_engine(f"sqlite:///{data / 'enclave.db'}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("select action from audit_events order by seq")).scalars())
    finally:
        engine.dispose()


def _users(data: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    listed = run_cli(capsys, ["user", "list", "--data", str(data)])
    assert listed.code == 0
    return {line.split()[0]: line.split()[1:] for line in listed.out.splitlines()[1:]}


def test_add_list_set_role_disable(data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    added = run_cli(capsys, ["user", "add", "Erin", "--data", str(data)])
    assert added.code == 0 and "one-time password" in added.out
    monkeypatch.setattr(sys, "stdin", io.StringIO("amber-falcon-rivulet-204\n"))
    added = run_cli(capsys, ["user", "--data", str(data), "add", "grace", "--role", "auditor", "--password-stdin"])
    assert added.code == 0 and "one-time password" not in added.out
    users = _users(data, capsys)
    assert users["erin"][:2] == ["developer", "must-change-password"]
    assert users["grace"][:2] == ["auditor", "active"]
    changed = run_cli(capsys, ["user", "set-role", "erin", "admin", "--data", str(data)])
    assert changed.code == 0 and "role=developer -> role=admin" in changed.out
    assert run_cli(capsys, ["user", "disable", "grace", "--data", str(data)]).code == 0
    assert _users(data, capsys)["grace"][1] == "disabled"
    assert _audit_actions(data)[-4:] == [
        "admin.user.created", "admin.user.created", "admin.user.role_changed", "admin.user.disabled",
    ]


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["user", "add", "admin"], None, "already exists"),
        (["user", "add", "heidi", "--role", "overlord"], None, "unknown role"),
        (["user", "add", "heidi", "--password-stdin"], "password12345678\n", "blocklist"),
        (["user", "add", "heidi", "--password-stdin"], "short\n", "too short"),
        (["user", "add", "heidi", "--password-stdin"], "", "nothing was read"),
        (["user", "add", "heidi", "--team", "ghosts"], None, "no team"),
        (["user", "set-role", "admin", "developer"], None, "last active admin"),
        (["user", "set-role", "nobody", "developer"], None, "no user named"),
        (["user", "disable", "admin"], None, "last active admin"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    data: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    stdin: str | None,
    message: str,
) -> None:
    before_users, before_audit = _users(data, capsys), _audit_actions(data)
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert message in one_line_error(run_cli(capsys, [*argv, "--data", str(data)]))
    assert _users(data, capsys) == before_users
    assert _audit_actions(data) == before_audit


def test_not_a_data_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "enclave.db").write_bytes(b"")  # looks a bit like one, but `init` never ran here
    line = one_line_error(run_cli(capsys, ["user", "list", "--data", str(tmp_path)]))
    assert "is not an Enclave data directory" in line


def test_reset_password_and_unlock(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, ["user", "add", "ivan", "--data", str(data)]).code == 0
    reset = run_cli(capsys, ["user", "reset-password", "ivan", "--data", str(data)])
    assert reset.code == 0 and "one-time password" in reset.out
    assert run_cli(capsys, ["user", "unlock", "ivan", "--data", str(data)]).code == 0
    assert _audit_actions(data)[-2:] == ["admin.user.password_reset", "admin.user.unlocked"]
