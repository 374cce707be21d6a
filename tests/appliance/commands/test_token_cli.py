"""``enclave token ...``: printed once, refused at once after revocation or expiry."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.auth import authenticate
from appliance.db.base import utcnow
from appliance.db.engine import UnitOfWork, make_engine
from shared.errors import AuthError
from shared.version import TOKEN_PREFIX
from tests.helpers.accounts import choose_password_offline, one_time_password
from tests.helpers.appliance_cli import one_line_error, run_cli


@pytest.fixture
def data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    site = tmp_path / "site"
    assert run_cli(capsys, ["init", "--data", str(site)]).code == 0
    added = run_cli(capsys, ["user", "add", "judy", "--data", str(site)])
    assert added.code == 0
    choose_password_offline(site, "judy", one_time_password(added.out), "amber-falcon-rivulet-204")
    return site


def _authenticate(data: Path, raw: str) -> str:
    engine = make_engine(f"sqlite:///{data / 'enclave.db'}")
    try:
        with UnitOfWork(engine)() as s:
            try:
                return authenticate(s, raw, now=utcnow()).username
            except AuthError as exc:
                return exc.reason
    finally:
        engine.dispose()


def test_create_list_revoke(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    created = run_cli(capsys, ["token", "create", "--user", "judy", "--name", "laptop", "--data", str(data)])
    assert created.code == 0
    raw = created.out.strip()
    assert raw.startswith(TOKEN_PREFIX) and "\n" not in raw and raw not in created.err
    assert _authenticate(data, raw) == "judy"
    listed = run_cli(capsys, ["token", "list", "--data", str(data)])
    assert "laptop" in listed.out and "active" in listed.out and raw not in listed.out
    assert run_cli(capsys, ["token", "revoke", "1", "--data", str(data)]).code == 0
    assert _authenticate(data, raw) == "revoked"
    assert "already revoked" in one_line_error(run_cli(capsys, ["token", "revoke", "1", "--data", str(data)]))
    assert "laptop" not in run_cli(capsys, ["token", "list", "--data", str(data)]).out
    assert "revoked" in run_cli(capsys, ["token", "list", "--all", "--data", str(data)]).out


def test_scoped_token(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["token", "create", "--user", "judy", "--name", "ci", "--scope", "models:read", "--data", str(data)]
    created = run_cli(capsys, argv)
    assert created.code == 0 and "(models:read)" in created.err and "one-time password" not in created.err
    # The first admin still holds a one-time password: the operator is told the token waits on it.
    created = run_cli(capsys, ["token", "create", "--user", "admin", "--name", "ops", "--data", str(data)])
    assert created.code == 0 and "still has a one-time password" in created.err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--user", "nobody"], "no user named"),
        (["--user", "judy", "--expires-days", "400"], "--expires-days must be 1..365"),
        (["--user", "judy", "--expires-days", "0"], "--expires-days must be 1..365"),
        (["--user", "judy", "--scope", "root"], "unknown scope"),
        (["--user", "judy", "--scope", "users:manage"], "cannot grant"),
    ],
)
def test_bad_create_is_one_line_and_creates_nothing(
    data: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    result = run_cli(capsys, ["token", "create", "--name", "x", "--data", str(data), *extra])
    assert message in one_line_error(result)
    assert result.out == ""
    assert run_cli(capsys, ["token", "list", "--all", "--data", str(data)]).out.count("\n") == 1


def test_revoke_unknown_token(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no token with id 42" in one_line_error(run_cli(capsys, ["token", "revoke", "42", "--data", str(data)]))
