"""A command that only reads creates nothing: on a data directory without a log or read
models it answers as before, and leaves the directory as it found it (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import closed_port, refused, run_cli


def _everything_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_status_on_an_empty_directory_leaves_it_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "v"
    data_dir.mkdir()
    line = refused(capsys, "--data-dir", str(data_dir), "status")
    assert line == (
        f"no run in the read models yet ({data_dir / 'projections.sqlite'}): "
        "`cdb backtest` or `cdb paper` makes one"
    )
    assert _everything_under(data_dir) == []


def test_status_on_a_directory_that_is_not_there_does_not_make_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "not" / "there"
    line = refused(capsys, "--data-dir", str(data_dir), "status", "--json")
    assert line.startswith("no run in the read models yet"), line
    assert _everything_under(tmp_path) == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["projections", "digest", "--run-id", "bt-x"], "no run 'bt-x' in the read models"),
        (["report", "--run-id", "bt-x", "--out", "{out}"], "no run 'bt-x' in the read models"),
        (["projections", "rebuild"], "no log at"),
        (["log", "topics"], "no log at"),
        (["replay", "--topic", "market_data"], "no log at"),
        (["intensity", "--once", "--metrics-port", "-1", "--redis", "{redis}"], "no run in"),
    ],
)
def test_other_commands_on_an_empty_directory_leave_it_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    data_dir = tmp_path / "v"
    data_dir.mkdir()
    # Nothing listens on the Redis port: one pass finds no run before it needs Redis.
    redis = f"redis://127.0.0.1:{closed_port()}/0"
    argv = [a.format(out=tmp_path / "r.html", redis=redis) for a in argv]
    line = refused(capsys, "--data-dir", str(data_dir), *argv)
    assert says in line, line
    assert _everything_under(data_dir) == []


def test_the_digest_of_no_read_models_is_that_of_a_fresh_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh, empty = tmp_path / "fresh", tmp_path / "empty"
    empty.mkdir()
    assert run_cli(capsys, "--data-dir", str(fresh), "db", "upgrade").code == 0
    of_fresh = run_cli(capsys, "--data-dir", str(fresh), "projections", "digest")
    of_none = run_cli(capsys, "--data-dir", str(empty), "projections", "digest")
    assert of_fresh.code == of_none.code == 0
    assert len(of_none.out.strip()) == 64 and of_none.out == of_fresh.out
    assert _everything_under(empty) == []
