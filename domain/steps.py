"""The steps the fused pipeline and the staged agents share, so both write the same events.

A strategy's intent becomes a signal event; an order meets the candle it fills at and
becomes its result event; an order left without a next candle is rejected. Each takes the
run's sequencer of the events it makes: in the fused pipeline one sequencer makes every
type, in the staged topology each stage makes its own types (see ``domain.stages``).
"""

from __future__ import annotations

from domain.events import Bar, Sequencer, SimulatedOrder, SimulatedTrade, StrategySignal
from domain.execution import CostModel, fill_at_next_open
from domain.risk import reasons
from domain.strategies.base import SignalIntent


def signal_event(
    ids: Sequencer, strategy_id: str, candle: Bar, candle_id: str, intent: SignalIntent
) -> StrategySignal:
    """The signal ``intent`` makes of ``candle`` (the event ``candle_id``): decided at the
    bar's close, at its close price."""
    return ids.new_event(
        StrategySignal,
        candle.timestamp + candle.interval_ms,
        candle_id,
        symbol=candle.symbol,
        direction=intent.direction,
        strength=intent.strength,
        reason=intent.reason,
        strategy_id=strategy_id,
        price=candle.close,
    )


def order_result(
    ids: Sequencer,
    order: SimulatedOrder,
    timestamp: int,
    status: str,
    quantity: float,
    price: float,
    fee: float,
    reason: str | None,
) -> SimulatedTrade:
    return ids.new_event(
        SimulatedTrade,
        timestamp,
        order.event_id,
        order_id=order.order_id,
        status=status,
        symbol=order.symbol,
        side=order.side,
        filled_quantity=quantity,
        price=price,
        fee=fee,
        reason=reason,
    )


def execute_order(
    ids: Sequencer,
    order: SimulatedOrder,
    timestamp: int,
    open_price: float,
    cost: CostModel,
    cash: float,
    held: float,
) -> SimulatedTrade:
    """``order`` at the open of the candle at ``timestamp``, with ``cash`` to pay and
    ``held`` of its symbol to sell: filled, or rejected with a reason."""
    fill = fill_at_next_open(order.side, order.quantity, open_price, cost, cash, held)
    return order_result(
        ids, order, timestamp, fill.status, fill.quantity, fill.price, fill.fee, fill.reason
    )


def expire_order(ids: Sequencer, order: SimulatedOrder, end_timestamp: int) -> SimulatedTrade:
    """``order`` rejected at the end of its run: there is no next candle to fill it at."""
    return order_result(
        ids, order, end_timestamp, "REJECTED", 0.0, 0.0, 0.0, reasons.NO_NEXT_CANDLE
    )
