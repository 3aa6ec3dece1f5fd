"""Performance statistics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from domain.statistics import YEAR_MS, PerformanceTracker

DAY_MS = 86_400_000


def test_statistics_of_a_four_bar_series() -> None:
    # Daily bars from 1,000: 1,100, 990, 990, 1,089.
    # Returns: +10 %, -10 %, 0 %, +10 %. Mean 0.025.
    # Sample variance: ((0.075)^2 + (-0.125)^2 + (-0.025)^2 + (0.075)^2) / 3
    #                = (0.005625 + 0.015625 + 0.000625 + 0.005625) / 3 = 0.0091666...
    # Sharpe = 0.025 / sqrt(0.0091666) * sqrt(365)
    # Downside: sqrt(((-0.1)^2) / 4) = 0.05 -> Sortino = 0.025 / 0.05 * sqrt(365)
    tracker = PerformanceTracker(1_000.0, DAY_MS)
    for day, (equity, in_market) in enumerate(
        [(1_100.0, True), (990.0, True), (990.0, False), (1_089.0, True)]
    ):
        tracker.on_bar(day * DAY_MS, equity, in_market)
    tracker.on_closed_trade(100.0)
    tracker.on_closed_trade(-110.0)
    tracker.on_closed_trade(99.0)
    result = tracker.result(1_089.0)
    assert result.total_return_pct == pytest.approx(8.9)
    assert result.sharpe == pytest.approx(0.025 / math.sqrt(0.0275 / 3) * math.sqrt(365))
    assert result.sortino == pytest.approx(0.5 * math.sqrt(365))
    # Peak 1,100 -> trough 990: 10 % drawdown.
    assert result.max_drawdown_pct == pytest.approx(10.0)
    # Four daily bars span 4 days: CAGR = 1.089 ** (365 / 4) - 1.
    assert result.cagr_pct == pytest.approx((1.089 ** (365 / 4) - 1) * 100)
    # Trades: wins 100 and 99, loss 110 -> win rate 2/3, PF 199/110, expectancy 89/3.
    assert result.win_rate == pytest.approx(2 / 3)
    assert result.profit_factor == pytest.approx(199 / 110)
    assert result.expectancy == pytest.approx(89 / 3)
    assert result.trades == 3
    assert result.exposure_time_pct == pytest.approx(75.0)
    assert result.bars == 4


def test_annualisation_follows_the_candle_interval() -> None:
    hourly = PerformanceTracker(100.0, 3_600_000)
    for i, equity in enumerate([101.0, 100.0, 102.0]):
        hourly.on_bar(i * 3_600_000, equity, True)
    returns = [0.01, 100 / 101 - 1, 102 / 100 - 1]
    mean = sum(returns) / 3
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / 2)
    result = hourly.result(102.0)
    assert result.sharpe == pytest.approx(mean / std * math.sqrt(YEAR_MS / 3_600_000))


def test_undefined_statistics_are_none_not_infinite() -> None:
    tracker = PerformanceTracker(1_000.0, 60_000)
    for i in range(5):
        tracker.on_bar(i * 60_000, 1_000.0, False)
    result = tracker.result(1_000.0)
    assert result.sharpe is None and result.sortino is None  # no variance
    assert result.win_rate is None and result.profit_factor is None  # no trades
    assert result.expectancy is None
    assert result.max_drawdown_pct == 0.0 and result.total_return_pct == 0.0
    assert result.bars == 5

    only_wins = PerformanceTracker(1_000.0, 60_000)
    only_wins.on_bar(0, 1_010.0, True)
    only_wins.on_bar(60_000, 1_020.0, True)
    only_wins.on_closed_trade(20.0)
    result = only_wins.result(1_020.0)
    assert result.profit_factor is None  # no losing trade
    assert result.sortino is None  # no negative bar
    assert result.win_rate == 1.0


def test_flat_bars_fold_in_exactly_as_individual_zero_returns() -> None:
    series = [1_000.0, 1_010.0, 1_010.0, 1_010.0, 1_005.0, 1_005.0, 1_020.0, 1_020.0]
    tracker = PerformanceTracker(1_000.0, 60_000)
    for i, equity in enumerate(series):
        tracker.on_bar(i * 60_000, equity, False)
    previous = [1_000.0, *series[:-1]]
    returns = [e / p - 1 for e, p in zip(series, previous, strict=True)]
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
    result = tracker.result(series[-1])
    assert result.bars == len(series)
    assert result.sharpe == pytest.approx(mean / std * math.sqrt(YEAR_MS / 60_000), rel=1e-12)
