"""The per-candle pipeline with a scripted strategy: fills, causation, halts, kill switch."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import pytest

from domain.events import (
    Alert,
    Candle,
    Event,
    RiskDecision,
    RunCompleted,
    SimulatedOrder,
    SimulatedTrade,
    StrategySignal,
)
from domain.execution import CostModel
from domain.pipeline import PaperTradingPipeline
from domain.risk import RiskConfig, RiskEngine, reasons
from domain.run_config import BacktestConfig, run_metadata_event
from domain.strategies import SignalIntent
from tests.builders import candle, risk_config


class Scripted:
    """Signals the given direction on the given candle numbers."""

    strategy_id: ClassVar[str] = "scripted"

    def __init__(self, script: dict[int, str]) -> None:
        self.script = script
        self.seen = 0

    def on_candle(self, c: Candle) -> SignalIntent | None:
        direction = self.script.get(self.seen)
        self.seen += 1
        return SignalIntent(direction, "SCRIPTED") if direction else None  # type: ignore[arg-type]


def _pipeline(
    script: dict[int, str], config: RiskConfig | None = None, fee_bps: float = 10.0
) -> PaperTradingPipeline:
    return PaperTradingPipeline(
        run_id="run",
        strategy_id="scripted",
        strategy_factory=lambda: Scripted(script),
        risk_engine=RiskEngine(
            config or risk_config(sizing={"mode": "fixed_quantity", "quantity": 1.0})
        ),
        cost=CostModel(fee_bps=fee_bps),
        initial_cash=1_000.0,
        interval_ms=60_000,
    )


def _run(pipeline: PaperTradingPipeline, series: Iterable[Candle]) -> list[Event]:
    out: list[Event] = []
    for c in series:
        out.extend(pipeline.on_candle(c))
    out.extend(pipeline.finish(dead_letters=0))
    return out


def _of(events: list[Event], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def run_scripted() -> list[Event]:
    """A run that produces every kind of event the pipeline emits (used by other tests)."""
    p = _pipeline(
        {0: "BUY", 3: "BUY"},
        risk_config(
            sizing={"mode": "fixed_quantity", "quantity": 5.0},
            max_drawdown_pct=10.0,
            max_symbol_exposure_pct=1000,
            max_total_exposure_pct=1000,
        ),
    )
    metadata = run_metadata_event("run", 0, "test", BacktestConfig(strategy_id="sma_cross"), [])
    events: list[Event] = [metadata, *p.begin(metadata)]
    events += _run(
        p,
        [
            candle(100, timestamp=0),
            candle(100, open_=100, timestamp=60_000),
            candle(70, timestamp=120_000),
            candle(70, timestamp=180_000),
        ],
    )
    return events


def test_a_buy_fills_at_the_next_open_with_its_fee() -> None:
    p = _pipeline({0: "BUY"})
    events = _run(p, [candle(100, timestamp=0), candle(105, open_=102, timestamp=60_000)])
    (result,) = _of(events, SimulatedTrade)
    assert (result.status, result.price, result.filled_quantity) == ("FILLED", 102.0, 1.0)
    assert result.fee == pytest.approx(0.102)  # 102 * 10 bps
    assert result.timestamp == 60_000  # the next candle's open
    (signal,) = _of(events, StrategySignal)
    assert signal.timestamp == 60_000  # the signal candle's close
    # Cash 1,000 - 102 - 0.102; marked at the last close 105.
    assert p.portfolio.equity == pytest.approx(1_000 - 102 - 0.102 + 105)


def test_causation_chain_and_derived_ids() -> None:
    events = _run(_pipeline({0: "BUY"}), [candle(100, timestamp=0), candle(101, timestamp=60_000)])
    (signal,) = _of(events, StrategySignal)
    (decision,) = _of(events, RiskDecision)
    (order,) = _of(events, SimulatedOrder)
    (result,) = _of(events, SimulatedTrade)
    assert signal.causation_id == "run:market_data:0"
    assert decision.causation_id == signal.event_id == "run:signal:0"
    assert order.causation_id == decision.event_id
    assert result.causation_id == order.event_id
    assert order.order_id == "SIM_run_000001"
    for event in events:
        assert event.event_id == f"run:{event.type}:{event.sequence}"
    by_type: dict[str, list[int]] = {}
    for event in events:
        by_type.setdefault(event.type, []).append(event.sequence)
    assert all(seqs == list(range(len(seqs))) for seqs in by_type.values())


def test_an_order_without_a_next_candle_is_rejected_not_dropped() -> None:
    events = _run(_pipeline({1: "BUY"}), [candle(100, timestamp=0), candle(100, timestamp=60_000)])
    (result,) = _of(events, SimulatedTrade)
    assert (result.status, result.reason) == ("REJECTED", reasons.NO_NEXT_CANDLE)
    completed = _of(events, RunCompleted)[0]
    assert completed.rejected == 1 and completed.fills == 0 and completed.orders == 1


def test_drawdown_halt_alerts_once_then_blocks_entries_but_not_exits() -> None:
    config = risk_config(
        sizing={"mode": "fixed_quantity", "quantity": 5.0},
        max_drawdown_pct=10.0,
        max_symbol_exposure_pct=1000,
        max_total_exposure_pct=1000,
    )
    p = _pipeline({0: "BUY", 2: "BUY", 3: "SELL", 4: "BUY"}, config, fee_bps=0.0)
    series = [
        candle(100, timestamp=0),
        candle(100, timestamp=60_000),  # fill 5 @ 100; equity 1,000
        candle(70, timestamp=120_000),  # equity 850: 15 % drawdown -> HALTED
        candle(70, timestamp=180_000),
        candle(70, timestamp=240_000),  # SELL fills here
        candle(70, timestamp=300_000),
    ]
    events = _run(p, series)
    alerts = _of(events, Alert)
    assert [(a.level, a.code) for a in alerts] == [("CRITICAL", reasons.DRAWDOWN_LIMIT_HIT)]
    decisions = _of(events, RiskDecision)
    assert [(d.requested_direction, d.approved, d.reason_code) for d in decisions] == [
        ("BUY", True, reasons.OK),
        ("BUY", False, reasons.DRAWDOWN_HALT),
        ("SELL", True, reasons.OK),
        ("BUY", False, reasons.DRAWDOWN_HALT),
    ]
    assert p.trading_state == "HALTED"


def test_kill_switch_rejects_every_signal() -> None:
    config = risk_config(kill_switch=True)
    events = _run(
        _pipeline({0: "BUY", 1: "SELL"}, config),
        [candle(100, timestamp=0), candle(100, timestamp=60_000)],
    )
    decisions = _of(events, RiskDecision)
    assert [d.reason_code for d in decisions] == [reasons.KILL_SWITCH] * 2
    assert _of(events, SimulatedOrder) == []


def test_insufficient_cash_is_a_rejected_result() -> None:
    config = risk_config(
        sizing={"mode": "fixed_quantity", "quantity": 20.0},
        max_symbol_exposure_pct=1000,
        max_total_exposure_pct=1000,
    )
    events = _run(
        _pipeline({0: "BUY"}, config), [candle(100, timestamp=0), candle(100, timestamp=60_000)]
    )
    (result,) = _of(events, SimulatedTrade)
    assert (result.status, result.reason) == ("REJECTED", reasons.INSUFFICIENT_CASH)
