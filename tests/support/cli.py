"""Running ``cdb`` in the test's process and checking the one-line error it promises."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cdb.cli import main
from tests.support.processes import free_port

ERROR_PREFIX = "cdb: error: "


@dataclass(frozen=True)
class CliRun:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> CliRun:
    """``main(argv)`` with what it wrote; an argparse refusal counts as its exit code."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return CliRun(code, captured.out, captured.err)


def the_error_line(err: str) -> str:
    """The one ``cdb: error:`` line of ``err`` (its text after the prefix); fails unless
    there is exactly one and no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(lines) == 1, err
    return lines[0][len(ERROR_PREFIX) :]


def refused(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 2) -> str:
    """Run ``cdb argv``, check that it fails with ``code`` in one line; that line."""
    run = run_cli(capsys, *argv)
    assert run.code == code, (run.code, run.err)
    return the_error_line(run.err)


def closed_port() -> int:
    """A loopback port nothing listens on (bound once by the OS, then released)."""
    return free_port()
