"""The Risk Engine's rules. Each rule approves, resizes or rejects one proposal.

Adding a rule is a local change: write a class with ``check`` and put it in
``default_rules`` at the place in the chain where it belongs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

from domain.events.execution import Side
from domain.events.risk import TradingState
from domain.risk import reasons
from domain.risk.config import RiskConfig


@dataclass(frozen=True, slots=True)
class OrderProposal:
    """An order as it moves down the chain. ``quantity`` is None until sizing sets it."""

    symbol: str
    side: Side
    price: float
    quantity: float | None = None

    @property
    def is_entry(self) -> bool:
        """Long-only: a BUY adds exposure, a SELL only ever reduces it."""
        return self.side == "BUY"


@dataclass(frozen=True, slots=True)
class RiskContext:
    """What the Risk Engine knows when it decides: the portfolio as of the signal."""

    equity: float
    cash: float
    positions: Mapping[str, float]
    exposure_by_symbol: Mapping[str, float]
    total_exposure: float
    trading_state: TradingState
    config: RiskConfig


class RuleOutcome(NamedTuple):
    """``proposal`` None means rejected with ``reason_code``; a changed quantity, resized."""

    proposal: OrderProposal | None
    reason_code: str | None = None


class RiskRule(Protocol):
    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome: ...


def _reject(code: str) -> RuleOutcome:
    return RuleOutcome(None, code)


class KillSwitch:
    """While the kill switch is on, nothing trades: entries and exits alike."""

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if ctx.config.kill_switch:
            return _reject(reasons.KILL_SWITCH)
        return RuleOutcome(proposal)


class DrawdownHalt:
    """After the maximum drawdown was hit, new entries stop; exits still pass."""

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if ctx.trading_state == "HALTED" and proposal.is_entry:
            return _reject(reasons.DRAWDOWN_HALT)
        return RuleOutcome(proposal)


class CloseOnlyWhatIsHeld:
    """Long-only: a SELL closes the whole position and is refused when there is none."""

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if proposal.is_entry:
            return RuleOutcome(proposal)
        held = ctx.positions.get(proposal.symbol, 0.0)
        if held <= 0.0:
            return _reject(reasons.NO_POSITION)
        return RuleOutcome(replace(proposal, quantity=held))


class Sizing:
    """Sets the size of an entry: a fixed quantity, or a fraction of equity at risk."""

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if not proposal.is_entry:
            return RuleOutcome(proposal)
        sizing = ctx.config.sizing
        if sizing.mode == "fixed_quantity":
            assert sizing.quantity is not None  # guaranteed by SizingConfig
            return RuleOutcome(replace(proposal, quantity=sizing.quantity))
        if ctx.equity <= 0.0:
            return _reject(reasons.NON_POSITIVE_EQUITY)
        at_risk = ctx.equity * sizing.risk_pct / 100.0
        quantity = at_risk / (proposal.price * sizing.stop_distance_pct / 100.0)
        return RuleOutcome(replace(proposal, quantity=quantity))


def _capped(proposal: OrderProposal, headroom: float, resized: str, limited: str) -> RuleOutcome:
    """Shrink an entry to ``headroom`` of notional, or reject when nothing is left."""
    assert proposal.quantity is not None
    # A quantity an earlier rule cut to headroom / price can come back a rounding error
    # above it; that is at the limit, not over it, and must not be resized (or relabelled).
    if proposal.quantity * proposal.price <= headroom * (1.0 + 1e-12):
        return RuleOutcome(proposal)
    if headroom <= 0.0:
        return _reject(limited)
    return RuleOutcome(replace(proposal, quantity=headroom / proposal.price), resized)


class SymbolExposureLimit:
    """Gross notional in one symbol (held and pending) stays within its share of equity."""

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if not proposal.is_entry:
            return RuleOutcome(proposal)
        limit = ctx.equity * ctx.config.max_symbol_exposure_pct / 100.0
        used = ctx.exposure_by_symbol.get(proposal.symbol, 0.0)
        return _capped(
            proposal,
            limit - used,
            reasons.SYMBOL_EXPOSURE_RESIZED,
            reasons.SYMBOL_EXPOSURE_LIMIT,
        )


class TotalExposureLimit:
    """Gross notional over all symbols (held and pending) stays within its share of equity."""

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if not proposal.is_entry:
            return RuleOutcome(proposal)
        limit = ctx.equity * ctx.config.max_total_exposure_pct / 100.0
        return _capped(
            proposal,
            limit - ctx.total_exposure,
            reasons.TOTAL_EXPOSURE_RESIZED,
            reasons.TOTAL_EXPOSURE_LIMIT,
        )


class MinimumOrder:
    """Refuses orders of no size, or below the configured minimum notional."""

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        assert proposal.quantity is not None
        notional = proposal.quantity * proposal.price
        if proposal.quantity <= 0.0 or notional < ctx.config.min_order_notional:
            return _reject(reasons.ORDER_TOO_SMALL)
        return RuleOutcome(proposal)


def default_rules() -> tuple[RiskRule, ...]:
    """The chain, in order: pre-checks, then sizing, then limits on the sized order."""
    return (
        KillSwitch(),
        DrawdownHalt(),
        CloseOnlyWhatIsHeld(),
        Sizing(),
        SymbolExposureLimit(),
        TotalExposureLimit(),
        MinimumOrder(),
    )
