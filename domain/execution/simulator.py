"""The Execution Simulator's fill model: market orders fill at the next candle's open."""

from __future__ import annotations

from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from domain.events.execution import OrderStatus, Side
from domain.risk import reasons

_CASH_TOLERANCE = 1e-9


class CostModel(BaseModel):
    """Fees and slippage in basis points of the fill's notional and price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fee_bps: float = Field(default=10.0, ge=0, le=10_000)
    slippage_bps: float = Field(default=0.0, ge=0, le=10_000)


class Fill(NamedTuple):
    status: OrderStatus
    quantity: float
    price: float
    fee: float
    reason: str | None


def order_id_for(run_id: str, number: int) -> str:
    """Deterministic order ids: the run and the order's number within it."""
    return f"SIM_{run_id}_{number:06d}"


def fill_at_next_open(
    side: Side,
    quantity: float,
    next_open: float,
    cost: CostModel,
    cash: float,
    held: float,
) -> Fill:
    """Fill a market order at ``next_open``, moved against the order by the slippage.

    A BUY that ``cash`` cannot pay for (fee included) and a SELL of more than is ``held``
    are rejected with a reason, never dropped.
    """
    slip = cost.slippage_bps / 10_000.0
    price = next_open * (1.0 + slip) if side == "BUY" else next_open * (1.0 - slip)
    fee = quantity * price * cost.fee_bps / 10_000.0
    if side == "BUY" and quantity * price + fee > cash + _CASH_TOLERANCE:
        return Fill("REJECTED", 0.0, price, 0.0, reasons.INSUFFICIENT_CASH)
    if side == "SELL" and quantity > held * (1.0 + 1e-12):
        return Fill("REJECTED", 0.0, price, 0.0, reasons.INSUFFICIENT_POSITION)
    return Fill("FILLED", quantity, price, fee, None)
