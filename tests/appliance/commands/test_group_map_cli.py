"""``enclave group-map ...``: provider groups -> teams and roles from the shell, audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.appliance_cli import one_line_error, run_cli


def test_add_list_remove_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = str(tmp_path / "site")
    assert run_cli(capsys, ["init", "--data", site]).code == 0
    assert run_cli(capsys, ["team", "add", "backend", "--allow-model", "*", "--data", site]).code == 0
    added = run_cli(capsys, ["group-map", "add", "oidc", "eng", "backend", "--role", "auditor", "--data", site])
    assert added.code == 0 and "mapping 1" in added.out
    listed = run_cli(capsys, ["group-map", "list", "--data", site])
    assert "eng" in listed.out and "backend" in listed.out and "auditor" in listed.out
    missing = run_cli(capsys, ["group-map", "add", "oidc", "eng", "nosuch", "--data", site])
    assert missing.code == 1 and one_line_error(missing) == "enclave: error: no team named 'nosuch'"
    again = run_cli(capsys, ["group-map", "add", "oidc", "eng", "backend", "--data", site])
    assert again.code == 1 and "already maps" in again.err
    assert run_cli(capsys, ["group-map", "remove", "1", "--data", site]).code == 0
    assert "eng" not in run_cli(capsys, ["group-map", "list", "--data", site]).out
    audit = run_cli(capsys, ["audit", "verify", "--data", site])
    assert audit.code == 0
