"""PerformanceTracker: a hand-computed series, the undefined cases, and a naive cross-check."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.events import RunStatistics
from domain.statistics import YEAR_MS, PerformanceTracker

QUARTER_MS = YEAR_MS // 4  # 4 bars per year: annualiser sqrt(4) = 2, 4 bars span one year
DAY_MS = 86_400_000


def _track(
    equities: list[float],
    in_market: list[bool] | None = None,
    trades: tuple[float, ...] | list[float] = (),
    *,
    initial: float = 1_000.0,
    interval_ms: int = QUARTER_MS,
    final: float | None = None,
) -> RunStatistics:
    tracker = PerformanceTracker(initial, interval_ms)
    flags = in_market if in_market is not None else [False] * len(equities)
    for i, (equity, flag) in enumerate(zip(equities, flags, strict=True)):
        tracker.on_bar(i * interval_ms, equity, flag)
    for pnl in trades:
        tracker.on_closed_trade(pnl)
    return tracker.result(equities[-1] if final is None else final)


# Four quarterly bars from 1_000: 1_100, 990, 990, 1_089
# returns r = [0.1, -0.1, 0.0, 0.1] (990 / 1_100 - 1 = -0.1; 1_089 / 990 - 1 = 0.1)
# mean = 0.1 / 4 = 0.025
# deviations 0.075, -0.125, -0.025, 0.075 -> squares sum 0.0275 -> sample var 0.0275 / 3
# Sharpe = 0.025 / sqrt(0.0275 / 3) * sqrt(YEAR / QUARTER = 4) = 0.52223...
# Sortino = 0.025 / sqrt(0.1^2 / 4 = 0.0025 -> 0.05) * 2 = 1.0
# max drawdown (1_100 - 990) / 1_100 = 10 %; total return 1_089 / 1_000 - 1 = 8.9 %
# span = 3 quarters + the last bar = 1 year, so CAGR = total return = 8.9 %
# trades [30, -10, 20, 0]: win rate 2 / 4, profit factor 50 / 10, expectancy 40 / 4
# in market on bars 1, 2 and 4: exposure time 3 / 4 = 75 %
EQUITIES = [1_100.0, 990.0, 990.0, 1_089.0]
IN_MARKET = [True, True, False, True]
TRADES = [30.0, -10.0, 20.0, 0.0]


@pytest.fixture
def stats() -> RunStatistics:
    return _track(EQUITIES, IN_MARKET, TRADES)


def test_total_return(stats: RunStatistics) -> None:
    assert stats.initial_cash == 1_000.0
    assert stats.final_equity == 1_089.0
    assert stats.total_return_pct == pytest.approx(8.9, rel=1e-12)


def test_max_drawdown(stats: RunStatistics) -> None:
    assert stats.max_drawdown_pct == pytest.approx(10.0, rel=1e-12)


def test_sharpe_uses_the_sample_stdev_and_the_annualiser(stats: RunStatistics) -> None:
    assert stats.sharpe == pytest.approx(0.025 / math.sqrt(0.0275 / 3) * 2, rel=1e-12)
    assert stats.sharpe == pytest.approx(0.5222329678670935, rel=1e-12)


def test_sortino_uses_the_downside_deviation_over_all_bars(stats: RunStatistics) -> None:
    assert stats.sortino == pytest.approx(1.0, rel=1e-12)


def test_cagr_over_exactly_one_year_is_the_total_return(stats: RunStatistics) -> None:
    assert stats.cagr_pct == pytest.approx(8.9, rel=1e-12)


def test_trade_statistics(stats: RunStatistics) -> None:
    assert stats.trades == 4
    assert stats.win_rate == 0.5
    assert stats.profit_factor == pytest.approx(5.0, rel=1e-12)
    assert stats.expectancy == pytest.approx(10.0, rel=1e-12)


def test_exposure_time_and_bars(stats: RunStatistics) -> None:
    assert stats.bars == 4
    assert stats.exposure_time_pct == 75.0


def test_daily_bars_annualise_with_sqrt_365() -> None:
    stats = _track(EQUITIES, IN_MARKET, interval_ms=DAY_MS)
    # same returns; bars per year 365 / 1
    assert stats.sharpe == pytest.approx(0.025 / math.sqrt(0.0275 / 3) * math.sqrt(365), rel=1e-12)
    assert stats.sortino == pytest.approx(0.5 * math.sqrt(365), rel=1e-12)


def test_cagr_over_two_years() -> None:
    # 4 half-year bars span 2 years; 1_000 -> 1_210: 1.21 ^ (1 / 2) - 1 = 10 %
    stats = _track([1_050.0, 1_100.0, 1_150.0, 1_210.0], interval_ms=YEAR_MS // 2)
    assert stats.cagr_pct == pytest.approx(10.0, rel=1e-9)
    assert stats.total_return_pct == pytest.approx(21.0, rel=1e-12)


def test_drawdown_counts_from_the_initial_cash() -> None:
    # first bar below the initial 1_000 at 800: 20 %; recovery to 1_500 and a fall to 1_350
    # is only (1_500 - 1_350) / 1_500 = 10 %
    stats = _track([800.0, 1_500.0, 1_350.0])
    assert stats.max_drawdown_pct == pytest.approx(20.0, rel=1e-12)


def test_unchanged_bars_count_as_zero_returns_wherever_they_fall() -> None:
    # 1_000 (flat), 1_000 (flat), 1_100, 1_100 (flat), 1_210: r = [0, 0, 0.1, 0, 0.1]
    # mean 0.04; deviations -0.04 x3, 0.06 x2 -> squares 3 * 0.0016 + 2 * 0.0036 = 0.012
    # sample var 0.012 / 4 = 0.003; Sharpe 0.04 / sqrt(0.003) * 2
    stats = _track([1_000.0, 1_000.0, 1_100.0, 1_100.0, 1_210.0])
    assert stats.bars == 5
    assert stats.sharpe == pytest.approx(0.04 / math.sqrt(0.003) * 2, rel=1e-9)
    assert stats.sortino is None  # no negative return
    assert stats.max_drawdown_pct == 0.0


# -- undefined statistics are None ----------------------------------------------------------------


def test_no_trades_leaves_the_trade_statistics_undefined() -> None:
    stats = _track(EQUITIES)
    assert stats.trades == 0
    assert (stats.win_rate, stats.profit_factor, stats.expectancy) == (None, None, None)


def test_no_losing_trade_leaves_the_profit_factor_undefined() -> None:
    stats = _track(EQUITIES, trades=[5.0, 15.0])
    assert stats.profit_factor is None
    assert stats.win_rate == 1.0
    assert stats.expectancy == 10.0  # (5 + 15) / 2


def test_only_losing_trades_give_a_zero_profit_factor() -> None:
    stats = _track(EQUITIES, trades=[-5.0, -15.0])
    assert stats.profit_factor == 0.0
    assert stats.win_rate == 0.0
    assert stats.expectancy == -10.0


def test_zero_variance_leaves_sharpe_and_sortino_undefined() -> None:
    # 1_000 -> 2_000 -> 4_000: r = [1, 1] exactly, stdev 0, no downside
    stats = _track([2_000.0, 4_000.0])
    assert (stats.sharpe, stats.sortino) == (None, None)
    assert stats.total_return_pct == 300.0


def test_a_flat_equity_curve_has_no_ratios() -> None:
    stats = _track([1_000.0] * 5)
    assert (stats.sharpe, stats.sortino, stats.max_drawdown_pct) == (None, None, 0.0)
    assert stats.bars == 5
    assert stats.total_return_pct == 0.0


def test_one_bar_is_not_enough_for_a_ratio() -> None:
    stats = _track([900.0])
    assert (stats.sharpe, stats.sortino) == (None, None)
    assert stats.max_drawdown_pct == pytest.approx(10.0, rel=1e-12)


def test_no_bars_at_all() -> None:
    stats = PerformanceTracker(1_000.0, DAY_MS).result(1_000.0)
    assert (stats.bars, stats.exposure_time_pct, stats.cagr_pct, stats.sharpe) == (
        0,
        0.0,
        None,
        None,
    )
    assert stats.total_return_pct == 0.0


def test_cagr_undefined_when_annualising_a_short_span_overflows() -> None:
    # doubling in one minute: ln 2 * 525_600 minutes per year >> 700
    stats = _track([2_000.0], interval_ms=60_000)
    assert stats.cagr_pct is None
    assert stats.total_return_pct == 100.0


def test_cagr_undefined_for_a_wiped_out_account() -> None:
    stats = _track([500.0, 0.0])
    assert stats.cagr_pct is None
    assert stats.total_return_pct == -100.0


# -- against a naive recomputation -----------------------------------------------------------


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, 0.0, 0.05, -0.05, 0.2, -0.1, 0.013]), st.booleans()),
        min_size=2,
        max_size=60,
    )
)
def test_matches_a_naive_recomputation(steps: list[tuple[float, bool]]) -> None:
    equity = 1_000.0
    equities: list[float] = []
    for change, _ in steps:
        equity = equity if change == 0.0 else equity * (1.0 + change)
        equities.append(equity)
    flags = [flag for _, flag in steps]
    stats = _track(equities, flags, interval_ms=DAY_MS)

    previous = [1_000.0, *equities[:-1]]
    returns = [e / p - 1.0 for e, p in zip(equities, previous, strict=True)]
    annualiser = math.sqrt(365)
    stdev = statistics.stdev(returns)
    mean = statistics.fmean(returns)
    downside = math.sqrt(statistics.fmean([min(r, 0.0) ** 2 for r in returns]))
    peak, worst = 1_000.0, 0.0
    for e in equities:
        peak = max(peak, e)
        worst = max(worst, (peak - e) / peak)

    assert stats.bars == len(steps)
    assert stats.exposure_time_pct == pytest.approx(sum(flags) / len(flags) * 100.0)
    assert stats.max_drawdown_pct == pytest.approx(worst * 100.0, rel=1e-9, abs=1e-12)
    if stdev > 1e-12:
        assert stats.sharpe == pytest.approx(mean / stdev * annualiser, rel=1e-6, abs=1e-9)
    if downside > 0.0:
        assert stats.sortino == pytest.approx(mean / downside * annualiser, rel=1e-9, abs=1e-12)
    else:
        assert stats.sortino is None
