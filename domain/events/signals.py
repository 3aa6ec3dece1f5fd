"""Strategy output (topic ``signals``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from domain.events.envelope import Event

Direction = Literal["BUY", "SELL", "FLAT"]


class StrategySignal(Event):
    type: Literal["signal"] = "signal"
    symbol: str
    direction: Direction
    strength: float | None = Field(default=None, ge=0.0, le=1.0)
    reason: str
    strategy_id: str
    price: float
