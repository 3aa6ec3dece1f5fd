"""Commands leave only what the documentation says they write: in the data directory the
files of README's "Where the data lives" (and under log/, those of docs/log.md's "On
disk"), and nothing at all in the directory they run in."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT, default_settings_env

GOLDEN = ROOT / "tests" / "golden"


def _documented_paths(markdown: Path, after: str) -> list[str]:
    """The paths of the first ``text`` block after the line ``after`` in ``markdown``."""
    text = markdown.read_text(encoding="utf-8")
    block = re.search(r"```text\n(.*?)```", text[text.index(after) :], flags=re.S)
    assert block is not None, (markdown, after)
    # A path, then two spaces or more, then what it is (a path may hold "<run id>").
    return [re.split(r"\s{2,}", line.strip())[0] for line in block[1].splitlines() if line.strip()]


def _pattern(documented: str) -> str:
    """A documented path as a regular expression: ``<name>`` is one path component, and a
    directory (``quarantine/``) holds anything."""
    pattern = "[^/]+".join(re.escape(part) for part in re.split(r"<[^>]+>", documented))
    return pattern + ".*" if documented.endswith("/") else pattern


def _allowed_in_data_dir() -> re.Pattern[str]:
    readme = _documented_paths(ROOT / "README.md", "## Where the data lives")
    log = _documented_paths(ROOT / "docs" / "log.md", "## On disk")
    assert all(p.startswith("var/") for p in readme), readme
    patterns = [_pattern(p.removeprefix("var/")) for p in readme]
    patterns += [_pattern("log/" + p) for p in log]
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def _files_under(directory: Path) -> list[str]:
    return sorted(
        str(path.relative_to(directory)) for path in directory.rglob("*") if not path.is_dir()
    )


def _cdb(workdir: Path, *argv: str) -> None:
    """``cdb argv`` run in ``workdir`` with the default data directory (./var there)."""
    env = {**default_settings_env(), "CDB_SNAPSHOT_EVERY": "1000"}  # snapshots too
    done = subprocess.run(
        [sys.executable, "-m", "cdb", *argv],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr


def test_a_backtest_and_a_rebuild_leave_only_the_documented_files(tmp_path: Path) -> None:
    workdir = tmp_path / "project"
    workdir.mkdir()
    candles = [str(GOLDEN / "golden_BTC-USD_30m.csv"), str(GOLDEN / "golden_ETH-USD_30m.csv")]
    _cdb(workdir, "backtest", "--data", candles[0], "--data", candles[1], "--no-progress")
    _cdb(workdir, "projections", "rebuild")
    _cdb(workdir, "status")

    assert sorted(p.name for p in workdir.iterdir()) == ["var"]
    files = _files_under(workdir / "var")
    allowed = _allowed_in_data_dir()
    assert [f for f in files if not allowed.fullmatch(f)] == []
    # What the commands above must have written, by the same documentation.
    assert {"projections.sqlite", "log/COMMIT"} <= set(files)
    assert any(f.startswith("snapshots/") and f.endswith(".snap") for f in files), files
    assert any(f.startswith("log/market_data/0/") for f in files), files
