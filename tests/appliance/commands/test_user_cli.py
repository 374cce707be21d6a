"""``enclave user ...``: changes are audited in the same transaction; bad input changes nothing."""

from __future__ import annotations

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


def test_add_list_set_role_disable(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    added = run_cli(capsys, ["user", "add", "Erin", "--data", str(data)])
    assert added.code == 0 and "one-time password" in added.out
    added = run_cli(capsys, ["user", "--data", str(data), "add", "grace", "--role", "auditor"])
    assert added.code == 0 and "one-time password" in added.out
    users = _users(data, capsys)
    # Whoever adds an account never picks a password its holder keeps (issue 12, item 6).
    assert users["erin"][:2] == ["developer", "must-change-password"]
    assert users["grace"][:2] == ["auditor", "must-change-password"]
    changed = run_cli(capsys, ["user", "set-role", "erin", "admin", "--data", str(data)])
    assert changed.code == 0 and "role=developer -> role=admin" in changed.out
    assert run_cli(capsys, ["user", "disable", "grace", "--data", str(data)]).code == 0
    assert _users(data, capsys)["grace"][1] == "disabled"
    assert _audit_actions(data)[-4:] == [
        "admin.user.created", "admin.user.created", "admin.user.role_changed", "admin.user.disabled",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["user", "add", "admin"], "already exists"),
        (["user", "add", "heidi", "--role", "overlord"], "unknown role"),
        (["user", "add", "heidi", "--team", "ghosts"], "no team"),
        # The operator cannot choose another person's password (issue 12, item 6).
        (["user", "add", "heidi", "--password-stdin"], "unrecognized arguments: --password-stdin"),
        (["user", "set-role", "admin", "developer"], "last active admin"),
        (["user", "set-role", "nobody", "developer"], "no user named"),
        (["user", "disable", "admin"], "last active admin"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    data: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    before_users, before_audit = _users(data, capsys), _audit_actions(data)
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
