"""The complete rule set in the pipeline: trading-state transitions and their events, the
automatic kill switch, cooldowns and rate limits in candle time, and snapshots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from domain.events import Alert, Candle, Event, RiskDecision, RiskState, SimulatedTrade
from domain.execution import CostModel
from domain.pipeline import PaperTradingPipeline
from domain.risk import RiskConfig, RiskEngine, RiskMemory, SizingConfig
from tests.domain.builders import (
    MINUTE_MS,
    RUN_ID,
    Scripted,
    candle,
    closes,
    fixed,
    of,
    pipeline,
    risk_config,
    run,
)

DAY_MS = 86_400_000


def _config(**fields: Any) -> RiskConfig:
    """5 units per entry and exposure limits no test here reaches, plus ``fields``."""
    fields.setdefault("sizing", fixed(5.0))
    return risk_config(max_symbol_exposure_pct=1000, max_total_exposure_pct=1000, **fields)


def _at(minutes: list[int], prices: Sequence[float], symbol: str = "BTC_USD") -> list[Candle]:
    """One-minute candles (open == close) at the given minutes of candle time."""
    return [
        candle(price, symbol=symbol, timestamp=m * MINUTE_MS)
        for m, price in zip(minutes, prices, strict=True)
    ]


def _decisions(events: list[Event]) -> list[tuple[str, bool, str]]:
    return [(d.requested_direction, d.approved, d.reason_code) for d in of(events, RiskDecision)]


def _alerts(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(a.level, a.code, a.timestamp) for a in of(events, Alert)]


def _states(events: list[Event]) -> list[tuple[str, bool, str, int]]:
    return [
        (s.trading_state, s.kill_switch, s.reason_code, s.timestamp) for s in of(events, RiskState)
    ]


def _multi(
    scripts: list[dict[int, str]], config: RiskConfig, initial_cash: float = 1_000.0
) -> PaperTradingPipeline:
    """A pipeline whose symbols follow their own scripts, in the order they first appear."""
    pending = iter(scripts)
    factory: Callable[[], Any] = lambda: Scripted(next(pending))  # noqa: E731
    return PaperTradingPipeline(
        run_id=RUN_ID,
        strategy_id=Scripted.strategy_id,
        strategy_factory=factory,
        risk_engine=RiskEngine(config),
        cost=CostModel(fee_bps=0.0, slippage_bps=0.0),
        initial_cash=initial_cash,
        interval_ms=MINUTE_MS,
    )


# -- ACTIVE -> REDUCING -> ACTIVE: the daily drawdown --------------------------------------
# 1_000 cash, 5 units, daily limit 10 %, total limit 50 %. Candles (minute: close):
# 0: 100 BUY -> 1: fill 5 @ 100, equity 1_000 = the day's high-water mark
# 2: 90 (950, 5 %); 3: 80 (900, exactly 10 %) -> REDUCING, CRITICAL DAILY_DRAWDOWN_LIMIT_HIT
# 4: 80 BUY refused (TRADING_REDUCING); 5: 80 SELL approved -> 6: fill 5 @ 80, flat at 900
# next UTC day, 1440: -> ACTIVE (INFO TRADING_RESUMED); BUY approved -> 1441: fill


def _daily_run(**extra: Any) -> tuple[PaperTradingPipeline, list[Event]]:
    cfg = _config(max_daily_drawdown_pct=10.0, max_drawdown_pct=50.0, **extra)
    p = pipeline({0: "BUY", 4: "BUY", 5: "SELL", 7: "BUY"}, config=cfg)
    series = _at([0, 1, 2, 3, 4, 5, 6, 1440, 1441], [100, 100, 90, 80, 80, 80, 80, 80, 80])
    return p, run(p, series)


def test_the_daily_limit_reduces_until_the_next_utc_day() -> None:
    p, events = _daily_run()
    assert _alerts(events) == [
        ("CRITICAL", "DAILY_DRAWDOWN_LIMIT_HIT", 3 * MINUTE_MS),
        ("INFO", "TRADING_RESUMED", DAY_MS),
    ]
    assert _states(events) == [
        ("REDUCING", False, "DAILY_DRAWDOWN_LIMIT_HIT", 3 * MINUTE_MS),
        ("ACTIVE", False, "TRADING_RESUMED", DAY_MS),
    ]
    assert _decisions(events) == [
        ("BUY", True, "OK"),
        ("BUY", False, "TRADING_REDUCING"),
        ("SELL", True, "OK"),  # reducing exposure passes
        ("BUY", True, "OK"),  # a new day
    ]
    assert p.trading_state == "ACTIVE"


def test_each_state_change_is_caused_by_its_alert() -> None:
    _, events = _daily_run()
    alerts = of(events, Alert)
    states = of(events, RiskState)
    assert [s.causation_id for s in states] == [a.event_id for a in alerts]
    assert alerts[0].causation_id == f"{RUN_ID}:market_data:3"  # the candle that crossed
    assert alerts[1].causation_id == f"{RUN_ID}:market_data:7"  # the new day's first candle
    assert alerts[0].message == (
        "Daily drawdown reached: 10.00% from the day's high-water mark (limit 10%). "
        "Only exits until the next UTC day."
    )


def test_a_loss_realised_by_a_fill_counts_for_the_daily_drawdown() -> None:
    # The position is closed at a gap down, 100 -> 85: flat at 925, 7.5 % down on the day;
    # no later mark would show it.
    cfg = _config(max_daily_drawdown_pct=7.5)
    p = pipeline({0: "BUY", 2: "SELL", 4: "BUY"}, config=cfg)
    events = run(p, _at([0, 1, 2, 3, 4, 5], [100, 100, 100, 85, 85, 85]))
    assert _alerts(events) == [("CRITICAL", "DAILY_DRAWDOWN_LIMIT_HIT", 3 * MINUTE_MS)]
    [alert] = of(events, Alert)
    [exit_fill] = [r for r in of(events, SimulatedTrade) if r.side == "SELL"]
    assert alert.causation_id == exit_fill.event_id
    assert _decisions(events)[-1] == ("BUY", False, "TRADING_REDUCING")


# -- ACTIVE -> REDUCING -> ACTIVE: consecutive losses -------------------------------------
# limit 2 losses in a row; entries and exits at the candles' opens (== closes):
# BUY 0 -> 1 @ 100; SELL 2 -> 3 @ 95 (loss 1); BUY 3 -> 4 @ 95; SELL 4 -> 5 @ 90 (loss 2):
# REDUCING, WARNING CONSECUTIVE_LOSSES at minute 5; BUY 5 refused; next day BUY approved.


def test_consecutive_losses_reduce_until_the_next_utc_day() -> None:
    cfg = _config(max_consecutive_losses=2)
    p = pipeline({0: "BUY", 2: "SELL", 3: "BUY", 4: "SELL", 5: "BUY", 7: "BUY"}, config=cfg)
    events = run(p, _at([0, 1, 2, 3, 4, 5, 6, 1440], [100, 100, 95, 95, 95, 90, 90, 90]))
    assert _alerts(events) == [
        ("WARNING", "CONSECUTIVE_LOSSES", 5 * MINUTE_MS),
        ("INFO", "TRADING_RESUMED", DAY_MS),
    ]
    assert _states(events) == [
        ("REDUCING", False, "CONSECUTIVE_LOSSES", 5 * MINUTE_MS),
        ("ACTIVE", False, "TRADING_RESUMED", DAY_MS),
    ]
    assert [d[2] for d in _decisions(events)] == ["OK"] * 4 + ["TRADING_REDUCING", "OK"]
    assert p.risk_memory.losing_streak == 0


def test_a_winning_exit_ends_the_reduction_of_a_losing_streak() -> None:
    # BTC and ETH each bought at 100 (minute 0 -> 1). BTC sold at a loss (2 -> 3 @ 90):
    # REDUCING after one loss. BTC's BUY at 4 is refused; ETH sold at a gain (4 -> 5 @ 110):
    # ACTIVE again at minute 5. BTC's BUY at 6 is approved.
    cfg = _config(max_consecutive_losses=1)
    p = _multi([{0: "BUY", 2: "SELL", 4: "BUY", 6: "BUY"}, {0: "BUY", 4: "SELL"}], cfg)
    minutes = [0, 1, 2, 3, 4, 5, 6, 7]
    btc = _at(minutes, [100, 100, 90, 90, 90, 90, 90, 90], "BTC")
    eth = _at(minutes, [100, 100, 100, 100, 110, 110, 110, 110], "ETH")
    events = run(p, [c for pair in zip(btc, eth, strict=True) for c in pair])
    assert _alerts(events) == [
        ("WARNING", "CONSECUTIVE_LOSSES", 3 * MINUTE_MS),
        ("INFO", "TRADING_RESUMED", 5 * MINUTE_MS),
    ]
    assert [s[0] for s in _states(events)] == ["REDUCING", "ACTIVE"]
    assert [(d.symbol, d.requested_direction, d.reason_code) for d in of(events, RiskDecision)] == [
        ("BTC", "BUY", "OK"),
        ("ETH", "BUY", "OK"),
        ("BTC", "SELL", "OK"),
        ("BTC", "BUY", "TRADING_REDUCING"),
        ("ETH", "SELL", "OK"),
        ("BTC", "BUY", "OK"),
    ]


# -- ACTIVE -> HALTED is for good -------------------------------------------------------------


def test_reducing_moves_on_to_halted_and_a_new_day_does_not_resume() -> None:
    # 10 units at 100 with 1_000, daily limit 10 %, total limit 20 %:
    # 100 -> 90 (10 %: REDUCING) -> 80 (20 %: HALTED); the next day's BUY is refused
    cfg = _config(sizing=fixed(10.0), max_daily_drawdown_pct=10.0, max_drawdown_pct=20.0)
    p = pipeline({0: "BUY", 4: "BUY"}, config=cfg)  # candle 4: the next day's first
    minutes = [*range(4), *range(1440, 1443)]
    events = run(p, _at(minutes, [100, 100, 90, 80, 80, 80, 80]))
    assert _states(events) == [
        ("REDUCING", False, "DAILY_DRAWDOWN_LIMIT_HIT", 2 * MINUTE_MS),
        ("HALTED", False, "DRAWDOWN_LIMIT_HIT", 3 * MINUTE_MS),
    ]
    assert [a[1] for a in _alerts(events)] == ["DAILY_DRAWDOWN_LIMIT_HIT", "DRAWDOWN_LIMIT_HIT"]
    assert _decisions(events) == [("BUY", True, "OK"), ("BUY", False, "DRAWDOWN_HALT")]
    assert p.trading_state == "HALTED"


def test_a_halt_and_the_daily_limit_on_one_candle_move_once_to_halted() -> None:
    cfg = _config(max_daily_drawdown_pct=10.0, max_drawdown_pct=10.0)
    p = pipeline({0: "BUY"}, config=cfg)
    events = run(p, _at([0, 1, 2, 3], [100, 100, 80, 80]))
    assert _states(events) == [("HALTED", False, "DRAWDOWN_LIMIT_HIT", 2 * MINUTE_MS)]
    assert [a[1] for a in _alerts(events)] == ["DRAWDOWN_LIMIT_HIT"]  # the halt ends the watch


# -- the automatic kill switch -----------------------------------------------------------------
# as tests/domain/test_domain_pipeline.py's drawdown run: 5 units, total limit 10 %;
# minute 3 (70): 15 % down -> HALTED, then the kill switch.


def _kill_switch_run(on: bool) -> tuple[PaperTradingPipeline, list[Event]]:
    cfg = _config(max_drawdown_pct=10.0, kill_switch_on_critical=on)
    p = pipeline({0: "BUY", 3: "BUY", 4: "SELL", 6: "BUY"}, config=cfg)
    return p, run(p, closes([100.0, 100.0, 90.0, 70.0, 60.0, 65.0, 80.0, 80.0]))


def test_a_critical_alert_turns_the_kill_switch_on_for_the_rest_of_the_run() -> None:
    p, events = _kill_switch_run(on=True)
    assert _alerts(events) == [
        ("CRITICAL", "DRAWDOWN_LIMIT_HIT", 3 * MINUTE_MS),
        ("CRITICAL", "KILL_SWITCH_ENGAGED", 3 * MINUTE_MS),
    ]
    assert _states(events) == [
        ("HALTED", False, "DRAWDOWN_LIMIT_HIT", 3 * MINUTE_MS),
        ("HALTED", True, "KILL_SWITCH_ENGAGED", 3 * MINUTE_MS),
    ]
    halt, engaged = of(events, Alert)
    assert engaged.causation_id == halt.event_id
    assert _decisions(events) == [
        ("BUY", True, "OK"),
        ("BUY", False, "KILL_SWITCH_ACTIVE"),
        ("SELL", False, "KILL_SWITCH_ACTIVE"),  # unlike the halt alone: exits stop too
        ("BUY", False, "KILL_SWITCH_ACTIVE"),
    ]
    assert p.portfolio.quantity("BTC_USD") == 5.0


def test_without_kill_switch_on_critical_the_halt_alone_lets_exits_pass() -> None:
    _, events = _kill_switch_run(on=False)
    assert [a[1] for a in _alerts(events)] == ["DRAWDOWN_LIMIT_HIT"]
    assert _decisions(events)[2] == ("SELL", True, "OK")


def test_the_daily_limit_trips_the_kill_switch_and_a_new_day_does_not_reset_it() -> None:
    p, events = _daily_run(kill_switch_on_critical=True)
    assert [a[1] for a in _alerts(events)] == [
        "DAILY_DRAWDOWN_LIMIT_HIT",
        "KILL_SWITCH_ENGAGED",
        "TRADING_RESUMED",
    ]
    assert [(s[0], s[1]) for s in _states(events)] == [
        ("REDUCING", False),
        ("REDUCING", True),
        ("ACTIVE", True),
    ]
    assert [d[2] for d in _decisions(events)] == ["OK"] + ["KILL_SWITCH_ACTIVE"] * 3
    assert p.risk_memory.kill_switch_tripped


def test_a_warning_does_not_trip_the_kill_switch() -> None:
    cfg = _config(drawdown_warning_pct=5.0, kill_switch_on_critical=True)
    events = run(pipeline({0: "BUY"}, config=cfg), _at([0, 1, 2], [100, 100, 90]))
    assert [a[:2] for a in _alerts(events)] == [("WARNING", "DRAWDOWN_WARNING")]
    assert of(events, RiskState) == []  # a warning changes no state


# -- warnings: once per crossing ----------------------------------------------------------------
# 5 units at 100 with 1_000: a close at 90 is 5 % down from the high-water mark of 1_000


def test_the_drawdown_warning_is_raised_once_per_crossing() -> None:
    cfg = _config(drawdown_warning_pct=5.0)
    p = pipeline({0: "BUY"}, config=cfg)
    prices = [100, 100, 90, 85, 90, 96, 90, 89]
    events = run(p, _at(list(range(len(prices))), prices))
    assert _alerts(events) == [
        ("WARNING", "DRAWDOWN_WARNING", 2 * MINUTE_MS),  # 5 %: reached
        ("WARNING", "DRAWDOWN_WARNING", 6 * MINUTE_MS),  # after 2 % at minute 5: re-armed
    ]
    [first, _] = of(events, Alert)
    assert first.message == (
        "Drawdown 5.00% from the high-water mark reached the warning level 5% (limit 30%)."
    )


def test_the_daily_warning_is_re_armed_by_a_new_day() -> None:
    cfg = _config(daily_drawdown_warning_pct=5.0)
    p = pipeline({0: "BUY"}, config=cfg)
    # day 0: 1_000 -> 950 (5 %): warning. Day 1 starts at 950: 905 is 4.7 %, 900 is 5.3 %.
    events = run(p, _at([0, 1, 2, 1440, 1441, 1442], [100, 100, 90, 90, 81, 80]))
    assert _alerts(events) == [
        ("WARNING", "DAILY_DRAWDOWN_WARNING", 2 * MINUTE_MS),
        ("WARNING", "DAILY_DRAWDOWN_WARNING", (1440 + 2) * MINUTE_MS),
    ]


# -- cooldowns and rate limits in candle time --------------------------------------------------
# BUY 0 -> 1 @ 100; SELL 2 -> 3 @ 90: a loss filled at minute 3. Decisions are made at a
# candle's close, one minute after its time: candle m decides at minute m + 1.


@pytest.mark.parametrize(
    ("cooldown", "first_allowed", "code"),
    [
        ({"after_loss_minutes": 3}, 6, "COOLDOWN_AFTER_LOSS"),  # until minute 3 + 3
        ({"global_after_loss_minutes": 4}, 7, "GLOBAL_COOLDOWN"),
        ({"after_stop_minutes": 5, "after_loss_minutes": 3}, 8, "COOLDOWN_AFTER_STOP"),
    ],
)
def test_cooldowns_end_at_their_candle_time(
    cooldown: dict[str, int], first_allowed: int, code: str
) -> None:
    cfg = _config(
        sizing=SizingConfig(mode="fixed_quantity", quantity=5.0, stop_distance_pct=10.0),
        cooldown=cooldown,
    )
    script = {0: "BUY", 2: "SELL"} | {m: "BUY" for m in range(3, 9)}
    events = run(pipeline(script, config=cfg), _at(list(range(10)), [100, 100, 90] + [90] * 7))
    entries = [(d.timestamp // MINUTE_MS, d.reason_code) for d in of(events, RiskDecision)][2:]
    # the BUY decided at first_allowed is approved; it fills at the next candle, and adding
    # to the position is not an exit: later BUYs pass too
    assert entries == [(m, code if m < first_allowed else "OK") for m in range(4, 10)]


def test_the_hourly_order_limit_counts_approved_orders_in_candle_time() -> None:
    # limit 2 an hour; BUY decided at 1, SELL at 2, BUY at 3 refused; at minute 61 the
    # order of minute 1 has left the hour (1, 61]: one order in it, the BUY passes.
    cfg = _config(max_orders_per_hour=2)
    p = pipeline({0: "BUY", 1: "SELL", 2: "BUY", 3: "BUY"}, config=cfg)
    events = run(p, _at([0, 1, 2, 60, 61], [100] * 5))
    assert [(d.timestamp // MINUTE_MS, d.reason_code) for d in of(events, RiskDecision)] == [
        (1, "OK"),
        (2, "OK"),
        (3, "ORDER_RATE_LIMIT"),
        (61, "OK"),
    ]


def test_a_pending_entry_counts_against_max_open_positions() -> None:
    cfg = _config(max_open_positions=1)
    p = _multi([{0: "BUY"}, {0: "BUY", 2: "BUY"}], cfg)
    events = run(
        p,
        [
            candle(100.0, symbol="BTC", timestamp=0),
            candle(100.0, symbol="ETH", timestamp=0),
            candle(100.0, symbol="BTC", timestamp=MINUTE_MS),
            candle(100.0, symbol="ETH", timestamp=MINUTE_MS),
            candle(100.0, symbol="ETH", timestamp=2 * MINUTE_MS),
        ],
    )
    assert [(d.symbol, d.reason_code) for d in of(events, RiskDecision)] == [
        ("BTC", "OK"),
        ("ETH", "MAX_OPEN_POSITIONS"),  # BTC's order has not filled yet
        ("ETH", "MAX_OPEN_POSITIONS"),  # now BTC is held
    ]


# -- snapshots ------------------------------------------------------------------------------------


def _every_rule() -> RiskConfig:
    return _config(
        kill_switch_on_critical=True,
        cooldown={"after_loss_minutes": 6, "global_after_loss_minutes": 2},
        sizing=SizingConfig(mode="fixed_notional", notional=480.0),
        min_order_quantity=0.1,
        max_order_quantity=4.5,
        max_order_notional=450.0,
        max_open_positions=1,
        drawdown_warning_pct=4.0,
        max_daily_drawdown_pct=6.0,
        daily_drawdown_warning_pct=3.0,
        max_orders_per_hour=6,
        max_consecutive_losses=2,
        max_drawdown_pct=25.0,
    )


_WAVES = ([100, 97, 94, 99, 103, 96, 92, 95], [100, 98, 96, 97, 95, 99, 101, 97, 94, 96])


def _busy_series() -> list[Candle]:
    """Five UTC days of 40 two-minute candles, BTC and ETH interleaved: saw-tooths that win
    and lose (losing streaks on the odd days), then a crash on the last day."""
    series = []
    for day in range(5):
        wave = _WAVES[day % 2]
        for m in range(40):
            t = (day * 1440 + 2 * m) * MINUTE_MS
            price = float(wave[m % len(wave)]) if day < 4 else (100.0 if m < 10 else 80.0)
            series.append(candle(price, symbol="BTC", timestamp=t))
            series.append(candle(price + 2 * (m % 3), symbol="ETH", timestamp=t))
    return series


def _busy_pipeline() -> PaperTradingPipeline:
    script = {n: ("BUY" if n % 4 == 0 else "SELL") for n in range(0, 200, 2)}
    return _multi([dict(script), dict(script)], _every_rule())


def test_the_busy_run_exercises_the_new_rules() -> None:
    events = run(_busy_pipeline(), _busy_series())
    assert {d.reason_code for d in of(events, RiskDecision)} >= {
        "COOLDOWN_AFTER_LOSS",
        "ORDER_RATE_LIMIT",
        "MAX_OPEN_POSITIONS",
        "ORDER_SIZE_RESIZED",
        "ORDER_NOTIONAL_RESIZED",
        "TRADING_REDUCING",
        "KILL_SWITCH_ACTIVE",
    }
    assert {a.code for a in of(events, Alert)} == {
        "CONSECUTIVE_LOSSES",
        "TRADING_RESUMED",
        "DRAWDOWN_WARNING",
        "DAILY_DRAWDOWN_LIMIT_HIT",
        "KILL_SWITCH_ENGAGED",
    }
    assert [(s.trading_state, s.kill_switch) for s in of(events, RiskState)] == [
        ("REDUCING", False),
        ("ACTIVE", False),
        ("REDUCING", False),
        ("ACTIVE", False),
        ("REDUCING", False),
        ("REDUCING", True),
    ]


@pytest.mark.parametrize("split", [37, 101, 170, 250, 331, 345, 390])
def test_export_and_restore_mid_run_give_the_same_events_with_every_rule_on(split: int) -> None:
    series = _busy_series()
    whole = run(_busy_pipeline(), series)
    first = _busy_pipeline()
    head = [e for c in series[:split] for e in first.on_candle(c)]
    second = _busy_pipeline()
    second.restore_state(first.export_state())
    assert second.risk_memory == first.risk_memory
    tail = run(second, series[split:])
    assert head + tail == whole


def test_the_engine_memory_is_part_of_the_snapshot() -> None:
    series = _busy_series()
    p = _busy_pipeline()
    for c in series[:101]:
        p.on_candle(c)
    assert p.state().risk_memory == p.risk_memory != RiskMemory()
    restored = _busy_pipeline()
    restored.restore_state(p.export_state())
    assert restored.risk_memory == p.risk_memory
    assert restored.risk_memory is not p.risk_memory
    assert restored.trading_state == p.trading_state
