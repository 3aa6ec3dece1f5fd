"""The drawdown watch's calm band: the pipeline leaves ``watch_levels`` uncalled only where
it would have done nothing, so skipping it changes no event."""

from __future__ import annotations

import copy
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.events import Alert, Candle, Event
from domain.execution import CostModel
from domain.pipeline import PaperTradingPipeline
from domain.risk import RiskConfig, RiskEngine, RiskMemory, RiskMonitor
from domain.risk.guard import TradingGuard
from domain.strategies import strategy_factory, strategy_params

MINUTE = 60_000

percent = st.floats(min_value=0.001, max_value=99.0)


@st.composite
def level_configs(draw: st.DrawFn) -> RiskConfig:
    limit = draw(st.sampled_from([5.0, 30.0, 100.0]))
    warning = draw(st.none() | st.floats(min_value=0.001, max_value=limit * 0.999))
    daily_limit = draw(st.none() | st.sampled_from([0.5, 5.0, 100.0]) | percent)
    daily_warning = draw(
        st.none() | st.floats(min_value=0.0001, max_value=(daily_limit or 100.0) * 0.999)
    )
    return RiskConfig(
        max_drawdown_pct=limit,
        drawdown_warning_pct=warning,
        max_daily_drawdown_pct=daily_limit,
        daily_drawdown_warning_pct=daily_warning,
    )


def _nudged(value: float, steps: int) -> float:
    for _ in range(abs(steps)):
        value = math.nextafter(value, math.inf if steps > 0 else -math.inf)
    return value


@settings(max_examples=400, deadline=None)
@given(
    config=level_configs(),
    day_high=st.sampled_from([10_000.0, 1.0, 1e-3, 0.0]) | st.floats(1e-3, 1e7),
    warned=st.booleans(),
    daily_warned=st.booleans(),
    daily_hit=st.booleans(),
    drawdown=st.floats(0.0, 100.0),
    fraction=st.floats(0.0, 1.2),
    steps=st.integers(-3, 3),
)
def test_inside_the_calm_band_watch_levels_does_nothing(
    config: RiskConfig,
    day_high: float,
    warned: bool,
    daily_warned: bool,
    daily_hit: bool,
    drawdown: float,
    fraction: float,
    steps: int,
) -> None:
    monitor = RiskMonitor(config)
    memory = RiskMemory(
        day_high_water_mark=day_high,
        drawdown_warned=warned,
        daily_drawdown_warned=daily_warned,
        daily_limit_hit=daily_hit,
    )
    calm = monitor.calm(memory)
    # equities anywhere, and on the float grid right at each bound of the band
    equities = [day_high * fraction]
    for gap in (calm.gap_low, calm.gap_high):
        if math.isfinite(gap):
            equities.append(_nudged(calm.day_high_water_mark - gap, steps))
    for equity in equities:
        inside = (
            calm.drawdown_low <= drawdown < calm.drawdown_high
            and calm.gap_low <= calm.day_high_water_mark - equity < calm.gap_high
        )
        after = copy.deepcopy(memory)
        notices = monitor.watch_levels(after, equity, drawdown)
        if inside:
            assert (notices, after) == ([], memory)


@settings(max_examples=300, deadline=None)
@given(
    daily_limit=percent,
    daily_warning=st.none() | st.floats(0.0001, 0.999),
    day_high=st.floats(1e-3, 1e7),
    daily_warned=st.booleans(),
    daily_hit=st.booleans(),
)
def test_the_band_ends_where_the_monitor_acts(
    daily_limit: float,
    daily_warning: float | None,
    day_high: float,
    daily_warned: bool,
    daily_hit: bool,
) -> None:
    config = RiskConfig(
        max_daily_drawdown_pct=daily_limit,
        daily_drawdown_warning_pct=None if daily_warning is None else daily_warning * daily_limit,
    )
    monitor = RiskMonitor(config)
    memory = RiskMemory(
        day_high_water_mark=day_high, daily_drawdown_warned=daily_warned, daily_limit_hit=daily_hit
    )
    calm = monitor.calm(memory)
    # exact, not merely safe: one gap beyond either end, the monitor has something to do
    for gap in (calm.gap_high, math.nextafter(calm.gap_low, -math.inf)):
        equity = day_high - gap
        if not math.isfinite(gap) or day_high - equity != gap:
            continue  # no equity has exactly this gap
        after = copy.deepcopy(memory)
        assert monitor.watch_levels(after, equity, 0.0) != [] or after != memory


# (drawdown_warning_pct, max_daily_drawdown_pct, daily_drawdown_warning_pct)
LEVELS = [
    (2.0, None, None),
    (None, 1.0, None),
    (None, None, 0.5),
    (None, 3.0, 0.5),
    (10.0, 1.0, 0.5),
    (2.0, 3.0, None),
]


class _GuardWatchingEveryMark(TradingGuard):
    """The guard as it was before the band: the monitor sees every mark and fill."""

    def settle(self, risk: RiskEngine | None = None) -> None:
        super().settle(risk)
        if self.watch_levels:
            self.calm_from = math.inf  # nothing is calm


class _WatchingEveryMark(PaperTradingPipeline):
    guard_type = _GuardWatchingEveryMark


def _events(pipeline_type: type[PaperTradingPipeline], seed: int) -> list[Event]:
    rng = random.Random(seed)
    warning, daily_limit, daily_warning = LEVELS[seed % len(LEVELS)]
    config = RiskConfig.model_validate(
        {
            "kill_switch_on_critical": rng.random() < 0.5,
            "sizing": {"risk_pct": rng.uniform(20, 90)},
            "max_drawdown_pct": 60.0,
            "drawdown_warning_pct": warning,
            "max_daily_drawdown_pct": daily_limit,
            "daily_drawdown_warning_pct": daily_warning,
            "max_consecutive_losses": rng.choice([None, 2]),
        }
    )
    params = strategy_params("sma_cross", {"fast": 2, "slow": 5})
    pipeline = pipeline_type(
        "run", "sma_cross", strategy_factory("sma_cross", params), RiskEngine(config),
        CostModel(), 10_000.0, MINUTE,
    )  # fmt: skip
    out: list[Event] = []
    price = 100.0
    for i in range(3_000):
        close = price * (1.0 + rng.gauss(0.0, 0.01))
        candle = Candle("BTC_USD", i * 10 * MINUTE, price, max(price, close), min(price, close),
                        close, 1.0, "1m", MINUTE)  # fmt: skip
        out += pipeline.on_candle(candle)
        price = close
        if i % 997 == 0:  # a snapshot restored: the band is worked out again
            state = pipeline.export_state()
            pipeline = pipeline_type(
                "run", "sma_cross", strategy_factory("sma_cross", params), RiskEngine(config),
                CostModel(), 10_000.0, MINUTE,
            )  # fmt: skip
            pipeline.restore_state(state)
    assert type(pipeline.guard) is pipeline_type.guard_type  # a restore keeps the watch
    return out + pipeline.finish(0)


@pytest.mark.parametrize("seed", range(12))
def test_the_band_skips_only_calls_that_change_nothing(seed: int) -> None:
    watched = _events(_WatchingEveryMark, seed)
    assert any(isinstance(e, Alert) and "DRAWDOWN" in e.code for e in watched)
    assert [e.model_dump_json() for e in _events(PaperTradingPipeline, seed)] == [
        e.model_dump_json() for e in watched
    ]
