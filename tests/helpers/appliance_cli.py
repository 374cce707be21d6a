"""Run ``enclave`` in-process (appliance.cli.main) and capture what it printed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from appliance.cli import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], argv: Sequence[str]) -> Result:
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def one_line_error(result: Result) -> str:
    """The error a failed command printed, checked to be exactly one line and no traceback."""
    assert result.code != 0
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("enclave: error: ")
    return lines[0]
