"""Risk Engine output: decisions (topic ``risk_decisions``) and state (topic ``portfolio``)."""

from __future__ import annotations

from typing import Literal

from domain.events.envelope import Event
from domain.events.signals import Direction

# ACTIVE: everything the rules allow; REDUCING: exits only, until lifted; HALTED: exits
# only, for the rest of the run (as NautilusTrader's TradingState).
TradingState = Literal["ACTIVE", "REDUCING", "HALTED"]


class RiskDecision(Event):
    type: Literal["risk_decision"] = "risk_decision"
    symbol: str
    requested_direction: Direction
    approved: bool
    approved_size: float
    reason_code: str
    requested_size: float | None = None


class RiskState(Event):
    type: Literal["risk_state"] = "risk_state"
    trading_state: TradingState
    kill_switch: bool
    drawdown_pct: float
    exposure_pct: float
    reason_code: str
