"""``enclave init``: a whole data directory or nothing; bad input is one line and no residue."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from appliance.auth import authenticate, login
from appliance.commands import init as init_cmd
from appliance.db import migrate
from appliance.db.base import utcnow
from appliance.db.engine import UnitOfWork, make_engine
from appliance.db.models import User
from shared.errors import ConfigError
from tests.helpers.appliance_cli import one_line_error, run_cli
from tests.helpers.appliance_db import THROTTLE_KEY

PASSWORD_LINE = "one-time password (shown only now; must be changed at first login): "


def _password(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(PASSWORD_LINE)]
    assert len(lines) == 1
    return lines[0][len(PASSWORD_LINE) :]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".init-" in p.name)


def test_init_creates_everything_and_a_first_admin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "site"
    result = run_cli(capsys, ["init", "--data", str(data), "--admin", "Root"])
    assert result.code == 0, result.err
    password = _password(result.out)
    assert {p.name for p in data.iterdir()} >= {"enclave.toml", "enclave.db", "keys", "models"}
    assert (data.stat().st_mode & 0o777) == 0o700 and (data / "keys").stat().st_mode & 0o077 == 0
    url = f"sqlite:///{data / 'enclave.db'}"
    assert migrate.current(url) == migrate.head()
    assert _leftovers(tmp_path) == []
    engine = make_engine(url)
    try:
        with UnitOfWork(engine)() as s:
            root = s.scalar(select(User).where(User.username == "root"))
            assert root is not None and root.role == "admin" and root.must_change_password
            assert password not in root.password_hash
            token, _ = login(s, "root", password, address="127.0.0.1", throttle_key=THROTTLE_KEY, now=utcnow())
            principal = authenticate(s, token, now=utcnow())
            assert principal.permissions == {"password:change"}
    finally:
        engine.dispose()


def test_init_refuses_an_existing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "site"
    assert run_cli(capsys, ["init", "--data", str(data)]).code == 0
    before = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    line = one_line_error(run_cli(capsys, ["init", "--data", str(data)]))
    assert "already exists" in line and "initialised" in line
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert "not empty" in one_line_error(run_cli(capsys, ["init", "--data", str(other)]))
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_unusable_target_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert "not a directory" in one_line_error(run_cli(capsys, ["init", "--data", str(blocker)]))
    assert "cannot create" in one_line_error(run_cli(capsys, ["init", "--data", str(blocker / "site")]))
    assert blocker.read_text() == "x" and _leftovers(tmp_path) == []


def test_init_into_an_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "empty"
    data.mkdir()
    assert run_cli(capsys, ["init", "--data", str(data)]).code == 0
    assert (data / "enclave.toml").is_file()


def test_failing_step_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(settings: object) -> None:
        raise ConfigError("simulated failure in a later step")

    monkeypatch.setattr(init_cmd, "STEPS", [*init_cmd.STEPS, broken])
    data = tmp_path / "site"
    assert "simulated failure" in one_line_error(run_cli(capsys, ["init", "--data", str(data)]))
    assert not data.exists()
    assert _leftovers(tmp_path) == []


def test_bad_admin_name_and_unreachable_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "site"
    assert "invalid user name" in one_line_error(run_cli(capsys, ["init", "--data", str(data), "--admin", "no way"]))
    url = "postgresql+psycopg://enclave:hunter2-pw@127.0.0.1:1/enclave?connect_timeout=2"
    line = one_line_error(run_cli(capsys, ["init", "--data", str(data), "--database-url", url]))
    assert "cannot reach database" in line and "hunter2-pw" not in line
    assert not data.exists() and _leftovers(tmp_path) == []


def test_init_on_postgresql_refuses_a_used_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    first = run_cli(capsys, ["init", "--data", str(tmp_path / "a"), "--database-url", pg_url])
    assert first.code == 0, first.err
    assert migrate.current(pg_url) == migrate.head()
    assert "database_url" in (tmp_path / "a" / "enclave.toml").read_text()
    line = one_line_error(run_cli(capsys, ["init", "--data", str(tmp_path / "b"), "--database-url", pg_url]))
    assert "already holds an Enclave installation" in line
    assert not (tmp_path / "b").exists()
    listed = run_cli(capsys, ["user", "list", "--data", str(tmp_path / "a")])
    assert listed.code == 0 and "admin" in listed.out


def test_newer_database_and_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "site"
    assert run_cli(capsys, ["init", "--data", str(data)]).code == 0
    url = f"sqlite:///{data / 'enclave.db'}"
    migrate.downgrade(url, "0001_foundation")
    assert "enclave init --upgrade" in one_line_error(run_cli(capsys, ["user", "list", "--data", str(data)]))
    upgraded = run_cli(capsys, ["init", "--data", str(data), "--upgrade"])
    assert upgraded.code == 0 and migrate.head() in upgraded.out
    assert run_cli(capsys, ["user", "list", "--data", str(data)]).code == 0
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("update alembic_version set version_num = '0099_from_the_future'"))
    engine.dispose()
    for argv in (["user", "list"], ["token", "list"], ["init", "--upgrade"]):
        assert "newer than the code" in one_line_error(run_cli(capsys, [*argv, "--data", str(data)]))


def test_real_subprocess(tmp_path: Path) -> None:
    enclave = Path(sys.executable).with_name("enclave")
    assert enclave.exists()
    env = {**os.environ, "ENCLAVE_DATA": str(tmp_path / "site")}
    done = subprocess.run([str(enclave), "init"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert PASSWORD_LINE in done.stdout
    listed = subprocess.run([str(enclave), "user", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "admin" in listed.stdout and "must-change-password" in listed.stdout
    again = subprocess.run([str(enclave), "init"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and again.stderr.startswith("enclave: error: ") and "Traceback" not in again.stderr
