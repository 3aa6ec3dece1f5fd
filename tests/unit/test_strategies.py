"""Strategies and their indicators."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.strategies import (
    MomentumParams,
    MomentumV1,
    SmaCross,
    SmaCrossParams,
    StrategyConfigError,
    strategy_params,
)
from domain.strategies.indicators import RollingExtreme
from tests.builders import candle, candles


def _signals(strategy, series):  # type: ignore[no-untyped-def]
    return [
        (i, s.direction, s.reason)
        for i, c in enumerate(series)
        if (s := strategy.on_candle(c)) is not None
    ]


def test_sma_cross_signals_on_the_crossing_candle() -> None:
    # fast=2, slow=3. Closes 10, 10, 10, 13, 7, 7:
    # i=2: fast 10, slow 10 (first full window, no previous) -> nothing
    # i=3: fast 11.5 > slow 11 (prev equal)               -> BUY
    # i=4: fast 10, slow 10 (touching is not crossing)    -> nothing
    # i=5: fast 7 < slow 9 (prev equal)                    -> SELL
    strategy = SmaCross(SmaCrossParams(fast=2, slow=3))
    got = _signals(strategy, candles([10, 10, 10, 13, 7, 7]))
    assert got == [(3, "BUY", "SMA_CROSS_UP"), (5, "SELL", "SMA_CROSS_DOWN")]


def test_sma_cross_is_silent_before_slow_plus_one_candles() -> None:
    strategy = SmaCross(SmaCrossParams(fast=2, slow=5))
    assert _signals(strategy, candles([1, 2, 3, 4, 100])) == []


def test_a_flat_market_never_crosses() -> None:
    # Repeating decimals make running sums inexact; the exact tie-break keeps it silent.
    strategy = SmaCross(SmaCrossParams(fast=10, slow=30))
    assert _signals(strategy, candles([11510.8] * 5_000)) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=50), min_size=40, max_size=300))
def test_sma_cross_agrees_with_exact_averages(ticks: list[int]) -> None:
    from fractions import Fraction

    closes = [t / 10 for t in ticks]
    fast, slow = 3, 7
    expected = []
    prev = None
    for i in range(slow - 1, len(closes)):
        diff = (
            sum(map(Fraction, closes[i - fast + 1 : i + 1])) / fast
            - sum(map(Fraction, closes[i - slow + 1 : i + 1])) / slow
        )
        side = (diff > 0) - (diff < 0)
        if prev is not None:
            if prev <= 0 < side:
                expected.append((i, "BUY", "SMA_CROSS_UP"))
            elif prev >= 0 > side:
                expected.append((i, "SELL", "SMA_CROSS_DOWN"))
        prev = side
    got = _signals(SmaCross(SmaCrossParams(fast=fast, slow=slow)), candles(closes))
    assert got == expected


def test_sma_params_are_validated_with_clear_messages() -> None:
    assert strategy_params("sma_cross", {"fast": "5", "slow": "20"}) == SmaCrossParams(
        fast=5, slow=20
    )
    with pytest.raises(StrategyConfigError, match=r"fast \(30\) must be smaller than slow \(10\)"):
        strategy_params("sma_cross", {"fast": "30", "slow": "10"})
    with pytest.raises(StrategyConfigError, match="fast"):
        strategy_params("sma_cross", {"fast": "abc"})
    with pytest.raises(StrategyConfigError, match="unknown strategy 'nope'"):
        strategy_params("nope", {})


def test_momentum_breakout_strength_and_no_repeat() -> None:
    # lookback 3: channel of the previous 3 candles' highs and lows.
    strategy = MomentumV1(MomentumParams(lookback=3, exit_lookback=2))
    series = [
        candle(100, high=101, low=99, timestamp=0),
        candle(100, high=102, low=98, timestamp=1),
        candle(100, high=101, low=97, timestamp=2),
        # highest 102, lowest 97, width 5; close 104 breaks out by 2 -> strength 0.4
        candle(104, high=104, low=100, timestamp=3),
        candle(106, high=106, low=103, timestamp=4),  # new high, but BUY already signalled
        # exit channel: lowest low of previous 2 = 100; close 99 breaks down -> SELL
        candle(99, high=105, low=98, timestamp=5),
    ]
    out = [(i, s) for i, c in enumerate(series) if (s := strategy.on_candle(c)) is not None]
    assert [(i, s.direction, s.reason) for i, s in out] == [
        (3, "BUY", "MOMENTUM_BREAKOUT"),
        (5, "SELL", "MOMENTUM_BREAKDOWN"),
    ]
    assert out[0][1].strength == pytest.approx(0.4)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=200),
    st.integers(min_value=1, max_value=20),
)
def test_rolling_extremes_match_naive_windows(values: list[float], length: int) -> None:
    high, low = RollingExtreme(length, maximum=True), RollingExtreme(length, maximum=False)
    for i, v in enumerate(values):
        window = values[max(0, i - length + 1) : i + 1]
        got_high, got_low = high.update(v), low.update(v)
        if i + 1 < length:
            assert got_high is None and got_low is None and high.value is None
        else:
            assert got_high == max(window) and got_low == min(window)
            assert high.value == got_high
