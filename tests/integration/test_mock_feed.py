"""The seeded mock feed: determinism, the time grid, OHLC sanity, the model's statistics,
its parameter hash, argument checks, and its use in place of a CSV source."""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.events import Candle, interval_ms
from domain.run_config import BacktestConfig
from streams.backtest import run_backtest
from streams.csv_source import BadRow, DataSourceError, merged_candles
from streams.embedded_log import EmbeddedLog
from streams.mock_feed import DEFAULT_START, JUMP_MIN, MockCandleSource, mock_sources

MINUTE = 60_000


def _candles(source: MockCandleSource) -> list[Candle]:
    dead: list[BadRow] = []
    candles = list(source.candles(dead.append))
    assert dead == []
    return candles


def _prices(candles: list[Candle]) -> list[tuple[float, ...]]:
    return [(c.open, c.high, c.low, c.close, c.volume) for c in candles]


def _log_returns(candles: list[Candle]) -> list[float]:
    return [math.log(c.close / c.open) for c in candles]


def _autocorrelation(xs: list[float]) -> float:
    mean = statistics.fmean(xs)
    d = [x - mean for x in xs]
    return sum(a * b for a, b in itertools.pairwise(d)) / sum(a * a for a in d)


def _robust_scale(returns: list[float]) -> float:
    """The sd a normal with these returns' median absolute value would have."""
    return statistics.median(abs(r) for r in returns) / 0.6745


def _assert_ohlc_sane(candles: list[Candle]) -> None:
    previous_close: float | None = None
    for c in candles:
        assert all(math.isfinite(v) for v in (c.open, c.high, c.low, c.close, c.volume))
        assert 0.0 < c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high
        assert c.volume > 0.0
        if previous_close is not None:
            assert c.open == previous_close
        previous_close = c.close


def test_same_parameters_give_identical_candles_and_seed_or_symbol_change_them() -> None:
    first = _candles(MockCandleSource("BTC_USDT", seed=7, count=2_000))
    again = MockCandleSource("BTC_USDT", seed=7, count=2_000)
    assert repr([tuple(c) for c in first]) == repr([tuple(c) for c in _candles(again)])
    assert _candles(again) == _candles(again)  # iterating a source twice starts over
    other_seed = _candles(MockCandleSource("BTC_USDT", seed=8, count=2_000))
    assert _prices(other_seed) != _prices(first)
    # Same seed and start price, another symbol: another stream, not a relabelled copy.
    aaa = _candles(MockCandleSource("AAA_USDT", seed=7, count=2_000))
    bbb = _candles(MockCandleSource("BBB_USDT", seed=7, count=2_000))
    assert aaa[0].open == bbb[0].open == 100.0
    assert sum(a.close != b.close for a, b in zip(aaa, bbb, strict=True)) == 2_000


def test_timestamps_are_on_the_grid_count_is_respected_and_endless_has_the_same_prefix() -> None:
    start = DEFAULT_START + 5 * 3_600_000
    counted = _candles(MockCandleSource("ETH_USDT", seed=3, interval="1h", start=start, count=700))
    assert [c.timestamp for c in counted] == [start + i * 3_600_000 for i in range(700)]
    assert {(c.symbol, c.interval, c.interval_ms) for c in counted} == {
        ("ETH_USDT", "1h", 3_600_000)
    }
    endless = MockCandleSource("ETH_USDT", seed=3, interval="1h", start=start)
    assert endless.count is None
    assert list(itertools.islice(endless.candles(lambda bad: None), 700)) == counted
    # A longer count: its first 700 are the same candles too.
    longer = _candles(MockCandleSource("ETH_USDT", seed=3, interval="1h", start=start, count=701))
    assert longer[:700] == counted


def test_progress_counts_every_candle_once() -> None:
    reported: list[int] = []
    source = MockCandleSource("BTC_USDT", seed=1, count=70_000)
    assert sum(1 for _ in source.candles(lambda bad: None, reported.append)) == 70_000
    assert sum(reported) == 70_000


@pytest.mark.parametrize("interval", ["1m", "1d"])
def test_ohlc_is_sane_over_twenty_thousand_candles(interval: str) -> None:
    candles = _candles(MockCandleSource("BTC_USDT", seed=11, interval=interval, count=20_000))
    assert candles[0].open == 40_000.0
    _assert_ohlc_sane(candles)
    # High and low are the extremes of a 4-step path: a wick above the body exactly when the
    # path's maximum is at one of its 3 inner points, which for a symmetric walk happens with
    # probability 1 - 2 * (35/128), about 45%. Noise added to the body would give ~100%.
    upper = sum(c.high > max(c.open, c.close) for c in candles) / len(candles)
    lower = sum(c.low < min(c.open, c.close) for c in candles) / len(candles)
    assert 0.42 < upper < 0.48
    assert 0.42 < lower < 0.48


def test_volatility_clusters_while_returns_stay_uncorrelated() -> None:
    returns = _log_returns(_candles(MockCandleSource("BTC_USDT", seed=5, count=50_000)))
    # Absolute returns, capped at 6 scales so the few jumps do not swamp the diffusion.
    cap = 6.0 * _robust_scale(returns)
    assert _autocorrelation([min(abs(r), cap) for r in returns]) > 0.05
    assert abs(_autocorrelation(returns)) < 0.05


def test_volatility_is_about_sixty_percent_a_year() -> None:
    returns = _log_returns(
        _candles(MockCandleSource("BTC_USDT", seed=2, interval="1h", count=50_000))
    )
    annual = statistics.pstdev(returns) * math.sqrt(365 * 24)
    assert 0.5 < annual < 0.7


def test_jumps_happen() -> None:
    returns = _log_returns(_candles(MockCandleSource("BTC_USDT", seed=5, count=50_000)))
    scale = _robust_scale(returns)
    beyond = [r for r in returns if abs(r) > 6.0 * scale]
    assert len(beyond) >= 3
    # A 1-minute diffusion move is about 0.08%: only a jump reaches the 1% minimum size.
    # About 0.2 a day, so some 7 in 50,000 minutes, of either sign.
    jumps = [r for r in returns if abs(r) >= 0.95 * JUMP_MIN]
    assert 3 <= len(jumps) <= 15
    assert min(jumps) < 0 < max(jumps)


BASE: dict[str, Any] = {
    "symbol": "BTC_USDT",
    "seed": 7,
    "interval": "1m",
    "start": DEFAULT_START,
    "count": 500,
    "start_price": None,
}


def _source(**changes: Any) -> MockCandleSource:
    params = {**BASE, **changes}
    return MockCandleSource(params.pop("symbol"), **params)


def test_the_hash_covers_every_parameter() -> None:
    base = _source()
    assert base.sha256 == _source().sha256
    assert len(base.sha256) == 64 and int(base.sha256, 16) >= 0
    assert base.name == "mock BTC_USDT seed=7 1m from 2024-01-01T00:00:00Z count=500"
    variants = [
        _source(seed=8),
        _source(symbol="ETH_USDT"),
        _source(interval="5m"),
        _source(start=DEFAULT_START + MINUTE),
        _source(count=501),
        _source(count=None),
        _source(start_price=123.0),
    ]
    hashes = {base.sha256} | {v.sha256 for v in variants}
    assert len(hashes) == len(variants) + 1
    # The same candles under another spelling: the same hash.
    assert _source(interval="60s").sha256 == base.sha256
    assert _source(start_price=40_000).sha256 == base.sha256


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"interval": "1x"}, "not an interval"),
        ({"interval": "0m"}, "not an interval"),
        ({"interval": ""}, "not an interval"),
        ({"start": DEFAULT_START + 1}, "not on the 1m grid"),
        ({"interval": "7d"}, "not on the 7d grid"),
        ({"start": -MINUTE}, "start must be"),
        ({"count": 0}, "count must be at least 1"),
        ({"count": -5}, "count must be at least 1"),
        ({"start_price": 0.0}, "start price must be a positive"),
        ({"start_price": -1.0}, "start price must be a positive"),
        ({"start_price": math.nan}, "start price must be a positive"),
        ({"start_price": math.inf}, "start price must be a positive"),
        ({"symbol": ""}, "symbol '' is empty or malformed"),
        ({"symbol": "BTC/USDT"}, "symbol 'BTC/USDT' is empty or malformed"),
        ({"symbol": "BTC USDT"}, "is empty or malformed"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(DataSourceError, match=message):
        _source(**changes)


def test_mock_sources_refuses_duplicates_and_no_symbols() -> None:
    with pytest.raises(DataSourceError, match="duplicate symbol 'BTC_USDT'"):
        mock_sources(["BTC_USDT", "ETH_USDT", "BTC_USDT"], seed=1, interval="1m", start=0, count=5)
    with pytest.raises(DataSourceError, match="no symbols"):
        mock_sources([], seed=1, interval="1m", start=0, count=5)
    with pytest.raises(DataSourceError, match="list of symbols"):
        mock_sources("BTC_USDT", seed=1, interval="1m", start=0, count=5)


def test_merged_mock_sources_come_in_time_then_symbol_order() -> None:
    sources = mock_sources(
        ["ETH_USDT", "BTC_USDT"], seed=4, interval="1m", start=DEFAULT_START, count=1_000
    )
    assert [s.start_price for s in sources] == [2_000.0, 40_000.0]
    merged = list(merged_candles(sources, lambda bad: None))
    keys = [(c.timestamp, c.symbol) for c in merged]
    assert keys == sorted(keys)
    assert len(set(keys)) == 2_000
    assert keys[:2] == [(DEFAULT_START, "BTC_USDT"), (DEFAULT_START, "ETH_USDT")]


def test_a_backtest_on_mock_sources_is_reproducible(tmp_path: Path) -> None:
    config = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 5, "slow": 20})
    outcomes = []
    for attempt in range(2):
        sources = mock_sources(
            ["BTC_USDT", "ETH_USDT"], seed=9, interval="1m", start=0, count=1_500
        )
        with EmbeddedLog(tmp_path / f"log-{attempt}") as log:
            outcomes.append(run_backtest(config, sources, log, parallel=False))
    first, second = outcomes
    assert first.completed.candles == 3_000
    assert first.completed.dead_letters == 0
    assert (first.run_id, first.log_digest) == (second.run_id, second.log_digest)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=-(2**70), max_value=2**70),
    interval=st.sampled_from(["1s", "15s", "1m", "5m", "30m", "1h", "4h", "1d", "3d"]),
    slot=st.integers(min_value=0, max_value=10**6),
    count=st.integers(min_value=1, max_value=300),
    start_price=st.one_of(st.none(), st.floats(min_value=1e-6, max_value=1e7)),
    symbol=st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True),
)
def test_any_parameters_give_sane_candles_on_the_grid(
    seed: int, interval: str, slot: int, count: int, start_price: float | None, symbol: str
) -> None:
    start = slot * interval_ms(interval)
    source = MockCandleSource(
        symbol, seed=seed, interval=interval, start=start, count=count, start_price=start_price
    )
    candles = _candles(source)
    assert len(candles) == count
    assert [c.timestamp for c in candles] == [start + i * source.interval_ms for i in range(count)]
    assert candles[0].open == (source.start_price if start_price is None else start_price)
    _assert_ohlc_sane(candles)
