"""Portfolio & State Manager output (topic ``portfolio``)."""

from __future__ import annotations

from typing import Literal

from domain.events.envelope import Event


class PositionState(Event):
    """A symbol's position right after a fill; ``trade_realized_pnl`` is that fill's P&L."""

    type: Literal["position_state"] = "position_state"
    symbol: str
    quantity: float
    avg_entry_price: float
    realized_pnl: float
    last_price: float
    order_id: str
    trade_realized_pnl: float


class PortfolioSnapshot(Event):
    type: Literal["portfolio_snapshot"] = "portfolio_snapshot"
    cash: float
    equity: float
    high_water_mark: float
    drawdown_pct: float
    exposure: float
    exposure_pct: float
    realized_pnl: float
    open_positions: int
