"""PaperTradingPipeline with a scripted strategy: fills, causation, halts, kill switch, ids."""

from __future__ import annotations

from collections import defaultdict

import pytest

from domain.events import (
    Alert,
    Candle,
    Event,
    PortfolioSnapshot,
    PositionState,
    RiskDecision,
    RiskState,
    RunCompleted,
    SimulatedOrder,
    SimulatedTrade,
    StrategySignal,
)
from domain.pipeline import PaperTradingPipeline
from domain.run_config import BacktestConfig, run_metadata_event
from tests.domain.builders import (
    MINUTE_MS,
    RUN_ID,
    bars,
    candle,
    closes,
    fixed,
    of,
    pipeline,
    risk_config,
    run,
)


def _with_begin(p: PaperTradingPipeline, series: list[Candle]) -> list[Event]:
    """``run`` preceded by the events ``begin`` emits for the run's metadata."""
    metadata = run_metadata_event(RUN_ID, 0, "test", BacktestConfig(strategy_id="sma_cross"), [])
    return [*p.begin(metadata), *run(p, series)]


# -- a BUY on candle 1 fills at candle 2's open -----------------------------------------------
# candles (open, close): 0 (100, 100), 1 (100, 100) BUY, 2 (101, 104), 3 (104, 104)
# 1 unit, fee 10 bps: fee 101 * 10 / 10_000 = 0.101; cash 1_000 - 101 - 0.101 = 898.899


def _fill_scenario() -> list[Event]:
    series = bars(
        [
            (100.0, 100.0, 100.0, 100.0),
            (100.0, 100.0, 100.0, 100.0),
            (101.0, 104.0, 101.0, 104.0),
            (104.0, 104.0, 104.0, 104.0),
        ]
    )
    return run(pipeline({1: "BUY"}, fee_bps=10.0), series)


def test_a_buy_signal_fills_at_the_next_candles_open_with_the_fee() -> None:
    events = _fill_scenario()
    [signal] = of(events, StrategySignal)
    [decision] = of(events, RiskDecision)
    [order] = of(events, SimulatedOrder)
    [result] = of(events, SimulatedTrade)
    [position] = of(events, PositionState)

    # decided at candle 1's close (its open time 60_000 + one interval), at its close price
    assert (signal.timestamp, signal.price, signal.direction) == (2 * MINUTE_MS, 100.0, "BUY")
    assert (signal.reason, signal.strategy_id, signal.strength) == ("SCRIPTED", "scripted", None)
    assert (decision.approved, decision.approved_size, decision.reason_code) == (True, 1.0, "OK")
    assert decision.requested_size == 1.0
    assert (order.order_id, order.side, order.quantity) == ("SIM_run_000001", "BUY", 1.0)

    assert result.timestamp == 2 * MINUTE_MS  # candle 2's open time
    assert (result.status, result.filled_quantity, result.price) == ("FILLED", 1.0, 101.0)
    assert result.fee == pytest.approx(0.101, rel=1e-12)
    assert result.reason is None
    assert (position.quantity, position.avg_entry_price, position.last_price) == (1.0, 101.0, 101.0)
    assert position.order_id == "SIM_run_000001"


def test_the_fill_snapshot_shows_cash_and_equity_after_the_fee() -> None:
    events = _fill_scenario()
    fill_snapshot = next(
        e for e in of(events, PortfolioSnapshot) if e.causation_id == f"{RUN_ID}:order_result:0"
    )
    # cash 898.899; marked at the fill price: 898.899 + 101 = 999.899
    assert fill_snapshot.cash == pytest.approx(898.899, rel=1e-12)
    assert fill_snapshot.equity == pytest.approx(999.899, rel=1e-12)
    assert fill_snapshot.exposure == 101.0
    assert fill_snapshot.open_positions == 1
    # (1_000 - 999.899) / 1_000 * 100 = 0.0101 %
    assert fill_snapshot.drawdown_pct == pytest.approx(0.0101, rel=1e-9)


def test_run_completed_counts_and_final_equity() -> None:
    [done] = of(_fill_scenario(), RunCompleted)
    assert (done.candles, done.signals, done.orders, done.fills, done.rejected) == (4, 1, 1, 1, 0)
    assert done.timestamp == 4 * MINUTE_MS  # the last candle's close
    # final equity: 898.899 + 1 * 104 = 1_002.899
    assert done.statistics.final_equity == pytest.approx(1_002.899, rel=1e-12)
    assert done.statistics.trades == 0  # nothing was closed


def test_the_causation_chain() -> None:
    events = _fill_scenario()
    [signal] = of(events, StrategySignal)
    [decision] = of(events, RiskDecision)
    [order] = of(events, SimulatedOrder)
    [result] = of(events, SimulatedTrade)
    [position] = of(events, PositionState)
    assert signal.causation_id == f"{RUN_ID}:market_data:1"  # the candle it saw
    assert decision.causation_id == signal.event_id
    assert order.causation_id == decision.event_id
    assert result.causation_id == order.event_id
    assert position.causation_id == result.event_id


def test_an_order_without_a_next_candle_is_rejected_at_finish() -> None:
    p = pipeline({2: "BUY"})
    per_candle = [p.on_candle(c) for c in closes([100.0, 100.0, 100.0])]
    assert of(per_candle[2], SimulatedOrder)  # the order is placed on the last candle...
    assert of([e for batch in per_candle for e in batch], SimulatedTrade) == []  # ...not filled
    finished = p.finish(dead_letters=0)
    [result] = of(finished, SimulatedTrade)
    [order] = of(per_candle[2], SimulatedOrder)
    assert (result.status, result.reason) == ("REJECTED", "NO_NEXT_CANDLE")
    assert (result.filled_quantity, result.fee) == (0.0, 0.0)
    assert result.causation_id == order.event_id
    assert result.timestamp == 3 * MINUTE_MS  # last open 120_000 + 60_000
    [done] = of(finished, RunCompleted)
    assert (done.orders, done.fills, done.rejected) == (1, 0, 1)
    assert p.portfolio.cash == 1_000.0


def test_a_fee_that_the_cash_cannot_pay_rejects_the_fill() -> None:
    # 10 units at an open of 100: 1_000 + fee 10 * 100 * 10 / 10_000 = 1 > 1_000 cash
    cfg = risk_config(sizing=fixed(10.0), max_symbol_exposure_pct=1000, max_total_exposure_pct=1000)
    events = run(pipeline({0: "BUY"}, config=cfg, fee_bps=10.0), closes([100.0, 100.0]))
    [result] = of(events, SimulatedTrade)
    assert (result.status, result.reason, result.filled_quantity) == (
        "REJECTED",
        "INSUFFICIENT_CASH",
        0.0,
    )
    assert of(events, PositionState) == []
    [done] = of(events, RunCompleted)
    assert (done.fills, done.rejected, done.statistics.final_equity) == (0, 1, 1_000.0)


def test_pending_entries_count_against_the_exposure_of_later_decisions() -> None:
    # BTC then ETH at the same time, 6 units at 100 each; both limits 100 % of 1_000.
    # BTC: 600 <= 1_000 -> approved. ETH: BTC's pending 600 is reserved, total headroom
    # 1_000 - 600 = 400 -> 400 / 100 = 4 units, TOTAL_EXPOSURE_RESIZED
    cfg = risk_config(sizing=fixed(6.0), max_symbol_exposure_pct=100, max_total_exposure_pct=100)
    p = pipeline({0: "BUY"}, config=cfg)
    events = [*p.on_candle(candle(100.0, symbol="BTC")), *p.on_candle(candle(100.0, symbol="ETH"))]
    btc, eth = of(events, RiskDecision)
    assert (btc.symbol, btc.approved_size, btc.reason_code) == ("BTC", 6.0, "OK")
    assert (eth.symbol, eth.approved_size, eth.reason_code) == (
        "ETH",
        4.0,
        "TOTAL_EXPOSURE_RESIZED",
    )
    assert eth.requested_size == 6.0


# -- the drawdown halt ----------------------------------------------------------------------------
# 5 units, no fees, max drawdown 10 %. Candles (open, close):
# 0 (100, 100) BUY -> 1 (100, 100) fill 5 @ 100: cash 500, equity 1_000 = high-water mark
# 2 (90, 90): equity 500 + 450 = 950, drawdown 5 %
# 3 (70, 70): equity 850, drawdown 15 % >= 10 -> HALTED, one CRITICAL alert; BUY refused
# 4 (60, 60): drawdown 20 %, no second alert; SELL approved for the 5 held
# 5 (65, 65): SELL fills 5 @ 65: cash 500 + 325 = 825; trade P&L (65 - 100) * 5 = -175
# 6 (80, 80): BUY refused, the halt stays; 7 (80, 80)


def _drawdown_run() -> tuple[PaperTradingPipeline, list[Event]]:
    cfg = risk_config(
        sizing=fixed(5.0),
        max_drawdown_pct=10.0,
        max_symbol_exposure_pct=1000,
        max_total_exposure_pct=1000,
    )
    p = pipeline({0: "BUY", 3: "BUY", 4: "SELL", 6: "BUY"}, config=cfg)
    series = closes([100.0, 100.0, 90.0, 70.0, 60.0, 65.0, 80.0, 80.0])
    return p, _with_begin(p, series)


def test_crossing_the_drawdown_limit_raises_exactly_one_critical_alert() -> None:
    _, events = _drawdown_run()
    [alert] = of(events, Alert)
    assert (alert.level, alert.code, alert.timestamp) == (
        "CRITICAL",
        "DRAWDOWN_LIMIT_HIT",
        3 * MINUTE_MS,
    )
    assert alert.message == (
        "Maximum drawdown reached: 15.00% from the high-water mark (limit 10%). "
        "New entries stopped."
    )
    states = of(events, RiskState)
    assert [s.trading_state for s in states] == ["ACTIVE", "HALTED"]
    halted = states[1]
    assert (halted.causation_id, halted.reason_code) == (alert.event_id, "DRAWDOWN_LIMIT_HIT")
    assert halted.drawdown_pct == pytest.approx(15.0, rel=1e-12)
    # exposure 5 * 70 = 350 of equity 850
    assert halted.exposure_pct == pytest.approx(350.0 / 850.0 * 100.0, rel=1e-12)


def test_after_the_halt_entries_are_refused_and_exits_pass() -> None:
    p, events = _drawdown_run()
    decisions = [
        (d.requested_direction, d.approved, d.approved_size, d.reason_code)
        for d in of(events, RiskDecision)
    ]
    assert decisions == [
        ("BUY", True, 5.0, "OK"),
        ("BUY", False, 0.0, "DRAWDOWN_HALT"),
        ("SELL", True, 5.0, "OK"),
        ("BUY", False, 0.0, "DRAWDOWN_HALT"),  # flat again, still halted
    ]
    assert [(r.side, r.status, r.price) for r in of(events, SimulatedTrade)] == [
        ("BUY", "FILLED", 100.0),
        ("SELL", "FILLED", 65.0),
    ]
    assert p.trading_state == "HALTED"
    assert p.portfolio.cash == 825.0
    [done] = of(events, RunCompleted)
    assert done.statistics.trades == 1
    assert done.statistics.expectancy == -175.0
    assert done.statistics.final_equity == 825.0
    assert done.statistics.total_return_pct == pytest.approx(-17.5, rel=1e-12)
    # bar-close equity peaks at 1_000 and bottoms at 800 (candle 4): 20 %
    assert done.statistics.max_drawdown_pct == pytest.approx(20.0, rel=1e-12)


def test_drawdown_exactly_at_the_limit_halts() -> None:
    # 10 units bought at 100 with 1_000: equity 1_000; a close at 90 is exactly 10 % down
    cfg = risk_config(
        sizing=fixed(10.0),
        max_drawdown_pct=10.0,
        max_symbol_exposure_pct=1000,
        max_total_exposure_pct=1000,
    )
    p = pipeline({0: "BUY"}, config=cfg)
    events = run(p, closes([100.0, 100.0, 95.0, 90.0]))
    [alert] = of(events, Alert)
    assert alert.timestamp == 3 * MINUTE_MS
    assert p.trading_state == "HALTED"


# -- kill switch ----------------------------------------------------------------------------------


def test_the_kill_switch_refuses_every_signal() -> None:
    cfg = risk_config(kill_switch=True, sizing=fixed(1.0))
    p = pipeline({0: "BUY", 1: "SELL", 2: "BUY"}, config=cfg)
    events = _with_begin(p, closes([100.0, 100.0, 100.0, 100.0]))
    assert [
        (d.requested_direction, d.approved, d.reason_code) for d in of(events, RiskDecision)
    ] == [
        ("BUY", False, "KILL_SWITCH_ACTIVE"),
        ("SELL", False, "KILL_SWITCH_ACTIVE"),  # before NO_POSITION_TO_CLOSE in the chain
        ("BUY", False, "KILL_SWITCH_ACTIVE"),
    ]
    assert of(events, SimulatedOrder) == []
    assert of(events, SimulatedTrade) == []
    [state] = of(events, RiskState)
    assert (state.kill_switch, state.trading_state) == (True, "ACTIVE")
    [done] = of(events, RunCompleted)
    assert (done.signals, done.orders, done.rejected) == (3, 0, 3)


# -- derived ids ----------------------------------------------------------------------------------


def test_event_ids_are_run_type_sequence_with_dense_sequences_per_type() -> None:
    _, events = _drawdown_run()
    by_type: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_type[e.type].append(e)
    for event_type, of_type in by_type.items():
        assert [e.sequence for e in of_type] == list(range(len(of_type))), event_type
        assert [e.event_id for e in of_type] == [
            f"{RUN_ID}:{event_type}:{i}" for i in range(len(of_type))
        ]
        assert all(e.run_id == RUN_ID for e in of_type)
    assert {t: len(v) for t, v in by_type.items()} == {
        "risk_state": 2,
        "portfolio_snapshot": 4,  # start, two fills, end
        "signal": 4,
        "risk_decision": 4,
        "order": 2,
        "order_result": 2,
        "position_state": 2,
        "alert": 1,
        "run_completed": 1,
    }


def test_every_cause_is_an_earlier_event_or_an_input() -> None:
    _, events = _drawdown_run()
    seen = {f"{RUN_ID}:run_metadata:0"} | {f"{RUN_ID}:market_data:{i}" for i in range(8)}
    for e in events:
        if e.causation_id is not None:
            # the final snapshot shares its id with run_completed, which follows it
            assert e.causation_id in seen or e.causation_id == f"{RUN_ID}:run_completed:0"
        seen.add(e.event_id)


def test_the_same_candles_give_the_same_events() -> None:
    assert _drawdown_run()[1] == _drawdown_run()[1]
