"""The Risk Engine: runs the rule chain over a signal, and watches drawdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from domain.events.risk import TradingState
from domain.events.signals import Direction
from domain.risk import reasons
from domain.risk.config import RiskConfig
from domain.risk.monitor import RiskMonitor
from domain.risk.rules import OrderProposal, RiskContext, RiskRule, default_rules


class Verdict(NamedTuple):
    approved: bool
    quantity: float
    reason_code: str
    requested_quantity: float | None


def side_for(direction: Direction) -> str:
    """Long-only: BUY opens or adds, SELL and FLAT close."""
    return "BUY" if direction == "BUY" else "SELL"


class RiskEngine:
    """Decides on proposals with an ordered chain of rules.

    The first rule that rejects ends the chain. A resize carries its reason code through
    to the decision, so every changed size is explained; the last resize wins. An entry
    runs through the rules that act on entries, an exit through those that act on exits
    (``acts_on``): a rule left out would have passed it unchanged, so the verdict is the
    whole chain's.
    """

    def __init__(self, config: RiskConfig, rules: Sequence[RiskRule] | None = None) -> None:
        self.config = config
        self.rules: tuple[RiskRule, ...] = (
            tuple(rules) if rules is not None else default_rules(config)
        )
        self._entry_rules = tuple(r for r in self.rules if getattr(r, "acts_on", None) != "exits")
        self._exit_rules = tuple(r for r in self.rules if getattr(r, "acts_on", None) != "entries")
        self.monitor = RiskMonitor(config)
        # What the pipeline must tell the monitor; all False for the default configuration,
        # which then costs nothing beyond the drawdown halt.
        self.watches_day = config.watches_day
        self.watches_levels = config.watches_levels
        self.watches_exits = config.watches_exits
        self.limits_order_rate = config.limits_order_rate
        self.max_drawdown_pct = config.max_drawdown_pct  # read after every marked candle

    def decide(self, proposal: OrderProposal, ctx: RiskContext) -> Verdict:
        reason = reasons.OK
        sized: float | None = None
        current = proposal
        # A rule resizes or rejects, never turns an entry into an exit: the side holds.
        for rule in self._entry_rules if proposal.side == "BUY" else self._exit_rules:
            checked, code = rule.check(current, ctx)
            if checked is None:
                return Verdict(False, 0.0, code or "REJECTED", sized)
            if current.quantity is None and checked.quantity is not None:
                sized = checked.quantity
            current = checked
            if code is not None:
                reason = code
        assert current.quantity is not None, "a rule chain must size every approved order"
        return Verdict(True, current.quantity, reason, sized)

    def trading_state_after(self, state: TradingState, drawdown_pct: float) -> TradingState:
        """HALTED once drawdown from the high-water mark reaches the limit; it stays halted."""
        if state != "HALTED" and drawdown_pct >= self.config.max_drawdown_pct:
            return "HALTED"
        return state
