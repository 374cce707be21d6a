"""``enclave team ...``: teams, members and policies from the shell; audited; they decide access."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from appliance.auth.policy import CaptureMode, effective_policy
from appliance.db.engine import make_engine
from appliance.db.models import User
from tests.helpers.appliance_cli import one_line_error, run_cli


@pytest.fixture
def data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    site = tmp_path / "site"
    assert run_cli(capsys, ["init", "--data", str(site)]).code == 0
    assert run_cli(capsys, ["user", "add", "erin", "--data", str(site)]).code == 0
    return site


def _query(data: Path, fn):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{data / 'enclave.db'}")
    try:
        with Session(engine) as session:
            return fn(session)
    finally:
        engine.dispose()


def _policy_of(data: Path, username: str):  # type: ignore[no-untyped-def]
    return _query(
        data, lambda s: effective_policy(s, s.scalar(sa.select(User.id).where(User.username == username)))
    )


def test_team_policy_and_membership_decide_what_a_user_may_do(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ["--data", str(data)]
    added = run_cli(capsys, ["team", "add", "backend", *d, "--allow-model", "demo*", "--requests-per-minute", "10",
                             "--capture", "sealed", "--max-output-tokens", "unlimited"])  # fmt: skip
    assert added.code == 0 and "max output tokens: unlimited" in added.out
    assert run_cli(capsys, ["team", "add-member", "backend", "erin", *d]).code == 0
    # erin is in default (every model, 60/min, digest) and backend: the strictest of both applies.
    policy = _policy_of(data, "erin")
    assert policy.allows_model("demo-v4") and not policy.allows_model("other")
    assert policy.requests_per_minute == 10 and policy.max_output_tokens == 4096
    assert policy.capture_mode is CaptureMode.SEALED

    changed = run_cli(capsys, ["team", "set-policy", "backend", *d, "--requests-per-minute", "unlimited",
                               "--allow-model", "*"])  # fmt: skip
    assert changed.code == 0 and "requests_per_minute 10 -> None" in changed.out
    assert _policy_of(data, "erin").requests_per_minute == 60  # now default's is the smaller
    shown = run_cli(capsys, ["team", "show", "backend", *d])
    assert "1 member(s): erin" in shown.out and "requests per minute: unlimited" in shown.out
    listed = {line.split()[0]: line.split()[1:] for line in run_cli(capsys, ["team", "list", *d]).out.splitlines()[1:]}
    assert listed["backend"][:3] == ["1", "*", "sealed"] and listed["default"][0] == "2"  # the admin, erin

    assert run_cli(capsys, ["team", "remove-member", "backend", "erin", *d]).code == 0
    assert _policy_of(data, "erin").capture_mode is CaptureMode.DIGEST
    actions = _query(data, lambda s: list(s.scalars(sa.text("select action from audit_events order by seq"))))
    assert actions[-4:] == [
        "admin.team.created", "admin.team.member_added", "admin.policy.changed", "admin.team.member_removed",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["team", "add", "default"], "team 'default' already exists"),
        (["team", "add", "bad name!"], "invalid team name"),
        (["team", "set-policy", "nope", "--capture", "none"], "no team named 'nope'"),
        (["team", "set-policy", "default"], "give at least one policy option"),
        (["team", "add-member", "default", "erin"], "already in team"),
        (["team", "remove-member", "default", "nobody"], "no user named 'nobody'"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    data: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    before = _query(data, lambda s: s.scalar(sa.text("select count(*) from audit_events")))
    assert message in one_line_error(run_cli(capsys, [*argv, "--data", str(data)]))
    assert _query(data, lambda s: s.scalar(sa.text("select count(*) from audit_events"))) == before


def test_a_bad_quota_is_a_usage_error(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, ["team", "add", "x", "--requests-per-minute", "-3", "--data", str(data)])
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.strip().splitlines()[-1] == (
        "enclave team add: error: argument --requests-per-minute: expected a non-negative integer or "
        "'unlimited', got '-3'"
    )


def test_a_team_may_forbid_thinking_and_cap_reasoning(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data", str(data)]
    assert _policy_of(data, "erin").allows_thinking and _policy_of(data, "erin").max_reasoning_tokens is None
    added = run_cli(capsys, ["team", "add", "contractors", *d, "--thinking", "forbid", "--max-reasoning-tokens", "512"])
    assert added.code == 0 and "allow thinking: False" in added.out and "max reasoning tokens: 512" in added.out
    assert run_cli(capsys, ["team", "add-member", "contractors", "erin", *d]).code == 0
    policy = _policy_of(data, "erin")
    assert policy.thinking_forbidden_by == ("contractors",) and policy.max_reasoning_tokens == 512
    changed = run_cli(capsys, ["team", "set-policy", "contractors", *d, "--thinking", "allow"])
    assert changed.code == 0 and "allow_thinking False -> True" in changed.out
    assert _policy_of(data, "erin").allows_thinking
