"""The Risk Engine's rules. Each rule approves, resizes or rejects one proposal.

Adding a rule is a local change: write a class with ``check`` and put it in
``default_rules`` at the place in the chain where it belongs. A rule of a setting that is
off by default joins the chain only when its setting is set. A rule that passes every exit
unchanged (or every entry) says so with ``acts_on = "entries"`` (or ``"exits"``), and the
engine leaves it out of the other side's chain; a rule without ``acts_on`` sees every order.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal, NamedTuple, Protocol

from domain.events.execution import Side
from domain.events.risk import TradingState
from domain.risk import reasons
from domain.risk.config import RiskConfig
from domain.risk.memory import RiskMemory

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


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

    def sized(self, quantity: float) -> OrderProposal:
        """This proposal with ``quantity`` (what ``dataclasses.replace`` gives, faster)."""
        return OrderProposal(self.symbol, self.side, self.price, quantity)


@dataclass(frozen=True, slots=True)
class RiskContext:
    """What the Risk Engine knows when it decides: the portfolio as of the signal, the
    decision's candle time, and what the engine remembers (read only here)."""

    equity: float
    cash: float
    positions: Mapping[str, float]
    exposure_by_symbol: Mapping[str, float]
    total_exposure: float
    trading_state: TradingState
    config: RiskConfig
    timestamp: int = 0
    pending_entries: frozenset[str] = frozenset()  # symbols with a BUY waiting to fill
    memory: RiskMemory = field(default_factory=RiskMemory)


class RuleOutcome(NamedTuple):
    """``proposal`` None means rejected with ``reason_code``; a changed quantity, resized."""

    proposal: OrderProposal | None
    reason_code: str | None = None


class RiskRule(Protocol):
    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome: ...


# The orders a rule can do anything to; it passes the others unchanged (see the module doc).
ActsOn = Literal["entries", "exits"]


def _reject(code: str) -> RuleOutcome:
    return RuleOutcome(None, code)


class KillSwitch:
    """While the kill switch is on, nothing trades: entries and exits alike. It is on when
    configured, or after a CRITICAL alert with ``kill_switch_on_critical``."""

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if ctx.config.kill_switch or ctx.memory.kill_switch_tripped:
            return _reject(reasons.KILL_SWITCH)
        return RuleOutcome(proposal)


class DrawdownHalt:
    """After the maximum drawdown was hit, new entries stop; exits still pass."""

    acts_on: ClassVar[ActsOn] = "entries"

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if ctx.trading_state == "HALTED" and proposal.is_entry:
            return _reject(reasons.DRAWDOWN_HALT)
        return RuleOutcome(proposal)


class ReducingOnly:
    """While REDUCING, only orders that reduce exposure pass: long-only, the exits."""

    acts_on: ClassVar[ActsOn] = "entries"

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if ctx.trading_state == "REDUCING" and proposal.is_entry:
            return _reject(reasons.TRADING_REDUCING)
        return RuleOutcome(proposal)


class Cooldown:
    """No new entry while a cooldown after a losing exit runs (the stop's first, as it says
    most, then the symbol's, then the global one). A cooldown ends at its time exactly."""

    acts_on: ClassVar[ActsOn] = "entries"

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if not proposal.is_entry:
            return RuleOutcome(proposal)
        memory = ctx.memory
        now = ctx.timestamp
        if now < memory.stop_cooldown_until.get(proposal.symbol, now):
            return _reject(reasons.COOLDOWN_AFTER_STOP)
        if now < memory.loss_cooldown_until.get(proposal.symbol, now):
            return _reject(reasons.COOLDOWN_AFTER_LOSS)
        until = memory.global_cooldown_until
        if until is not None and now < until:
            return _reject(reasons.GLOBAL_COOLDOWN)
        return RuleOutcome(proposal)


def orders_within(order_times: list[int], now: int, window_ms: int) -> int:
    """Orders decided in the trailing window ``(now - window_ms, now]``."""
    return len(order_times) - bisect_right(order_times, now - window_ms)


class OrderRateLimit:
    """At most so many approved orders per minute, hour and day of candle time (the trailing
    window up to and including the decision). Every approved order counts, but only entries
    are refused: an exit is never held back, so a position can always be closed."""

    acts_on: ClassVar[ActsOn] = "entries"

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if not proposal.is_entry:
            return RuleOutcome(proposal)
        config = ctx.config
        times = ctx.memory.order_times
        now = ctx.timestamp
        # Spelt out rather than looped over (limit, window) pairs built on every signal.
        limit = config.max_orders_per_minute
        if limit is not None and orders_within(times, now, MINUTE_MS) >= limit:
            return _reject(reasons.ORDER_RATE_LIMIT)
        limit = config.max_orders_per_hour
        if limit is not None and orders_within(times, now, HOUR_MS) >= limit:
            return _reject(reasons.ORDER_RATE_LIMIT)
        limit = config.max_orders_per_day
        if limit is not None and orders_within(times, now, DAY_MS) >= limit:
            return _reject(reasons.ORDER_RATE_LIMIT)
        return RuleOutcome(proposal)


class CloseOnlyWhatIsHeld:
    """Long-only: a SELL closes the whole position and is refused when there is none."""

    acts_on: ClassVar[ActsOn] = "exits"

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if proposal.is_entry:
            return RuleOutcome(proposal)
        held = ctx.positions.get(proposal.symbol, 0.0)
        if held <= 0.0:
            return _reject(reasons.NO_POSITION)
        return RuleOutcome(proposal.sized(held))


class MaxOpenPositions:
    """An entry in a new symbol is refused while ``max_open_positions`` symbols are held or
    have an entry pending; adding to a held or pending symbol opens nothing new."""

    acts_on: ClassVar[ActsOn] = "entries"

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        limit = ctx.config.max_open_positions
        if not proposal.is_entry or limit is None:
            return RuleOutcome(proposal)
        symbol = proposal.symbol
        if ctx.positions.get(symbol, 0.0) != 0.0 or symbol in ctx.pending_entries:
            return RuleOutcome(proposal)
        held = {s for s, quantity in ctx.positions.items() if quantity != 0.0}
        if len(held | ctx.pending_entries) >= limit:
            return _reject(reasons.MAX_OPEN_POSITIONS)
        return RuleOutcome(proposal)


class Sizing:
    """Sets the size of an entry: a fixed quantity or notional, or a fraction of equity at
    risk."""

    acts_on: ClassVar[ActsOn] = "entries"

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        if not proposal.is_entry:
            return RuleOutcome(proposal)
        sizing = ctx.config.sizing
        if sizing.mode == "fixed_quantity":
            assert sizing.quantity is not None  # guaranteed by SizingConfig
            return RuleOutcome(proposal.sized(sizing.quantity))
        if sizing.mode == "fixed_notional":
            assert sizing.notional is not None  # guaranteed by SizingConfig
            return RuleOutcome(proposal.sized(sizing.notional / proposal.price))
        if ctx.equity <= 0.0:
            return _reject(reasons.NON_POSITIVE_EQUITY)
        at_risk = ctx.equity * sizing.risk_pct / 100.0
        quantity = at_risk / (proposal.price * sizing.stop_distance_pct / 100.0)
        return RuleOutcome(proposal.sized(quantity))


def _capped(proposal: OrderProposal, headroom: float, resized: str, limited: str) -> RuleOutcome:
    """Shrink an entry to ``headroom`` of notional, or reject when nothing is left."""
    assert proposal.quantity is not None
    # A quantity an earlier rule cut to headroom / price can come back a rounding error
    # above it; that is at the limit, not over it, and must not be resized (or relabelled).
    if proposal.quantity * proposal.price <= headroom * (1.0 + 1e-12):
        return RuleOutcome(proposal)
    if headroom <= 0.0:
        return _reject(limited)
    return RuleOutcome(proposal.sized(headroom / proposal.price), resized)


class MaxOrderQuantity:
    """An entry above ``max_order_quantity`` is cut down to it. Exits close whole positions."""

    acts_on: ClassVar[ActsOn] = "entries"

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        limit = ctx.config.max_order_quantity
        assert proposal.quantity is not None
        if not proposal.is_entry or limit is None or proposal.quantity <= limit:
            return RuleOutcome(proposal)
        return RuleOutcome(proposal.sized(limit), reasons.ORDER_SIZE_RESIZED)


class MaxOrderNotional:
    """An entry above ``max_order_notional`` is cut down to it. Exits close whole positions."""

    acts_on: ClassVar[ActsOn] = "entries"

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        limit = ctx.config.max_order_notional
        if not proposal.is_entry or limit is None:
            return RuleOutcome(proposal)
        # The limit is positive, so there is always room: _capped only ever resizes here.
        return _capped(proposal, limit, reasons.ORDER_NOTIONAL_RESIZED, reasons.ORDER_TOO_SMALL)


class SymbolExposureLimit:
    """Gross notional in one symbol (held and pending) stays within its share of equity."""

    acts_on: ClassVar[ActsOn] = "entries"

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

    acts_on: ClassVar[ActsOn] = "entries"

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


class MinimumOrderQuantity:
    """Refuses orders, entries and exits alike, below ``min_order_quantity`` units."""

    def check(self, proposal: OrderProposal, ctx: RiskContext) -> RuleOutcome:
        assert proposal.quantity is not None
        limit = ctx.config.min_order_quantity
        if limit is not None and proposal.quantity < limit:
            return _reject(reasons.ORDER_QUANTITY_TOO_SMALL)
        return RuleOutcome(proposal)


def default_rules(config: RiskConfig | None = None) -> tuple[RiskRule, ...]:
    """The chain, in order: pre-checks, then sizing, then limits on the sized order.

    Rules of settings that ``config`` leaves off (all of them without a config) are left
    out: they would pass every order, and the default chain stays what it always was.
    """
    cfg = config if config is not None else RiskConfig()

    def when(enabled: bool, rule: RiskRule) -> tuple[RiskRule, ...]:
        return (rule,) if enabled else ()

    return (
        KillSwitch(),
        DrawdownHalt(),
        *when(cfg.can_reduce, ReducingOnly()),
        *when(cfg.cooldown is not None, Cooldown()),
        *when(cfg.limits_order_rate, OrderRateLimit()),
        CloseOnlyWhatIsHeld(),
        *when(cfg.max_open_positions is not None, MaxOpenPositions()),
        Sizing(),
        *when(cfg.max_order_quantity is not None, MaxOrderQuantity()),
        *when(cfg.max_order_notional is not None, MaxOrderNotional()),
        SymbolExposureLimit(),
        TotalExposureLimit(),
        MinimumOrder(),
        *when(cfg.min_order_quantity is not None, MinimumOrderQuantity()),
    )
