"""Execution Simulator output: orders (topic ``orders``) and results (``order_results``)."""

from __future__ import annotations

from typing import Literal

from domain.events.envelope import Event

Side = Literal["BUY", "SELL"]
OrderStatus = Literal["FILLED", "REJECTED"]


class SimulatedOrder(Event):
    type: Literal["order"] = "order"
    order_id: str
    symbol: str
    side: Side
    quantity: float
    order_type: Literal["MARKET"] = "MARKET"


class SimulatedTrade(Event):
    """The ``order_result`` payload: a fill, or a rejection with its reason."""

    type: Literal["order_result"] = "order_result"
    order_id: str
    status: OrderStatus
    symbol: str
    side: Side
    filled_quantity: float
    price: float
    fee: float
    reason: str | None = None
