"""The Risk Engine's watch between signals: exits, new days and drawdown levels.

The rules decide on proposals; the monitor keeps the memory they decide with up to date
and says, as notices, what deserves an alert. The pipeline turns notices into ``Alert``
and ``RiskState`` events, in the order given.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import NamedTuple

from domain.events.risk import TradingState
from domain.risk import reasons
from domain.risk.config import RiskConfig
from domain.risk.memory import Notice, RiskMemory
from domain.risk.rules import DAY_MS, HOUR_MS, MINUTE_MS


def _later(until: dict[str, int], symbol: str, time: int) -> None:
    """A new cooldown never shortens one that runs longer."""
    if time > until.get(symbol, time - 1):
        until[symbol] = time


def _drawdown_pct(high_water_mark: float, equity: float) -> float:
    if high_water_mark <= 0.0:
        return 0.0
    return _gap_pct(high_water_mark, high_water_mark - equity)


def _gap_pct(high_water_mark: float, gap: float) -> float:
    """The drawdown of an equity ``gap`` below a positive ``high_water_mark``, in percent."""
    return max(0.0, gap / high_water_mark * 100.0)


# How far from its first guess ``_smallest_gap_reaching`` looks on the float grid: the guess
# is off by a few units in the last place at most, unless the level is degenerate.
_GRID_STEPS = 8


def _smallest_gap_reaching(high_water_mark: float, level: float) -> float | None:
    """The smallest gap below a positive ``high_water_mark`` whose drawdown, as
    ``_gap_pct`` computes it, reaches ``level``; None if it is not found near the guess.

    That computation never falls as the gap grows (each rounded step is monotonic), so
    every smaller gap's drawdown is below ``level`` and this one's and every larger one's is
    not: comparing a gap with the result is comparing its drawdown with ``level``, bit for
    bit. (In gaps, not equities: near the high-water mark many equities share one gap.)
    """
    gap = high_water_mark * level / 100.0
    for _ in range(_GRID_STEPS):
        if _gap_pct(high_water_mark, gap) < level:
            break
        gap = math.nextafter(gap, -math.inf)
    else:
        return None
    for _ in range(_GRID_STEPS):
        gap = math.nextafter(gap, math.inf)
        if _gap_pct(high_water_mark, gap) >= level:
            return gap
    return None


class Calm(NamedTuple):
    """Where ``watch_levels`` has nothing to do: with ``drawdown_low <= drawdown_pct <
    drawdown_high`` and ``gap_low <= day_high_water_mark - equity < gap_high`` it changes no
    memory and raises no notice, so a caller may leave it uncalled. It holds until the
    memory changes."""

    drawdown_low: float
    drawdown_high: float
    day_high_water_mark: float
    gap_low: float
    gap_high: float


_NEVER_CALM = Calm(math.inf, -math.inf, 0.0, math.inf, -math.inf)


class RiskMonitor:
    def __init__(self, config: RiskConfig) -> None:
        self.config = config
        windows = (
            (config.max_orders_per_minute, MINUTE_MS),
            (config.max_orders_per_hour, HOUR_MS),
            (config.max_orders_per_day, DAY_MS),
        )
        # Older orders than the longest window never count again: they are dropped.
        self._longest_window_ms = max((ms for limit, ms in windows if limit is not None), default=0)
        self._watches_day_drawdown = (
            config.max_daily_drawdown_pct is not None
            or config.daily_drawdown_warning_pct is not None
        )

    @staticmethod
    def trading_state(memory: RiskMemory, current: TradingState) -> TradingState:
        """HALTED is for good; otherwise REDUCING while something holds it, else ACTIVE."""
        if current == "HALTED":
            return "HALTED"
        return "REDUCING" if memory.reducing else "ACTIVE"

    def record_order(self, memory: RiskMemory, decided_at: int) -> None:
        """Count an approved order for the rate limits."""
        times = memory.order_times
        times.append(decided_at)
        stale = bisect_right(times, decided_at - self._longest_window_ms)
        if stale:
            del times[:stale]

    def on_exit(
        self,
        memory: RiskMemory,
        symbol: str,
        filled_at: int,
        pnl: float,
        entry_price: float,
        exit_price: float,
        state: TradingState,
    ) -> list[Notice]:
        """A position was reduced at ``filled_at`` with realised ``pnl`` (net of fees)."""
        config = self.config
        if pnl >= 0.0:
            # A winning (or even) exit breaks the row of losses and lifts what it held.
            memory.losing_streak = 0
            if not memory.losing_streak_hit:
                return []
            memory.losing_streak_hit = False
            if state != "REDUCING" or memory.reducing:
                return []
            return [
                Notice(
                    "INFO",
                    reasons.TRADING_RESUMED,
                    "A winning exit ended the losing streak: entries are allowed again.",
                    moves_state=True,
                )
            ]
        cooldown = config.cooldown
        if cooldown is not None:
            if cooldown.after_loss_minutes is not None:
                until = filled_at + cooldown.after_loss_minutes * MINUTE_MS
                _later(memory.loss_cooldown_until, symbol, until)
            if cooldown.global_after_loss_minutes is not None:
                until = filled_at + cooldown.global_after_loss_minutes * MINUTE_MS
                current = memory.global_cooldown_until
                memory.global_cooldown_until = until if current is None else max(current, until)
            stop_price = entry_price * (1.0 - config.sizing.stop_distance_pct / 100.0)
            if cooldown.after_stop_minutes is not None and exit_price <= stop_price:
                until = filled_at + cooldown.after_stop_minutes * MINUTE_MS
                _later(memory.stop_cooldown_until, symbol, until)
        limit = config.max_consecutive_losses
        if limit is None:
            return []
        memory.losing_streak += 1
        if memory.losing_streak < limit or memory.losing_streak_hit:
            return []
        memory.losing_streak_hit = True
        return [
            Notice(
                "WARNING",
                reasons.CONSECUTIVE_LOSSES,
                f"{memory.losing_streak} losing exits in a row (limit {limit}): only exits "
                "until a winning exit or the next UTC day.",
                moves_state=True,
            )
        ]

    def on_new_day(self, memory: RiskMemory, equity: float, state: TradingState) -> list[Notice]:
        """A new UTC day of candle time begins, with ``equity`` carried into it."""
        memory.day_high_water_mark = equity
        memory.daily_drawdown_warned = False
        was_reducing = memory.reducing
        memory.daily_limit_hit = False
        if memory.losing_streak_hit:
            memory.losing_streak_hit = False
            memory.losing_streak = 0
        if not was_reducing or state != "REDUCING":
            return []
        return [
            Notice(
                "INFO",
                reasons.TRADING_RESUMED,
                "A new UTC day: entries are allowed again.",
                moves_state=True,
            )
        ]

    def calm(self, memory: RiskMemory) -> Calm:
        """The band of drawdown and equity in which ``watch_levels`` would do nothing.

        Most marks fall inside it: below every warning that has not fired, at or above one
        that has (it re-arms only on recovery), not above the day's high-water mark (a new
        one must be recorded). The bounds are exact: the gap bounds are where the daily
        drawdown, as ``watch_levels`` computes it from the gap, crosses its levels.
        """
        config = self.config
        warning = config.drawdown_warning_pct
        if warning is None:
            drawdown_low, drawdown_high = -math.inf, math.inf
        elif memory.drawdown_warned:
            drawdown_low, drawdown_high = warning, math.inf
        else:
            drawdown_low, drawdown_high = -math.inf, warning
        if not self._watches_day_drawdown:
            return Calm(drawdown_low, drawdown_high, 0.0, -math.inf, math.inf)
        high_water_mark = memory.day_high_water_mark
        if high_water_mark <= 0.0:
            return _NEVER_CALM
        # The daily drawdowns [daily_low, daily_high) that leave the memory as it is.
        limit = config.max_daily_drawdown_pct
        daily_warning = config.daily_drawdown_warning_pct
        # Once the limit is hit, any daily drawdown at or above the warning (or any at all,
        # without a warning) is taken as given until the next day.
        beyond = math.inf if memory.daily_limit_hit or limit is None else limit
        if not memory.daily_drawdown_warned:
            daily_low, daily_high = 0.0, beyond if daily_warning is None else daily_warning
        else:
            daily_low, daily_high = (0.0 if daily_warning is None else daily_warning), beyond
        # A gap below 0 is an equity above the day's high-water mark: a new one to record.
        gap_low: float | None = 0.0
        if daily_low > 0.0:
            gap_low = _smallest_gap_reaching(high_water_mark, daily_low)
        gap_high: float | None = math.inf
        if daily_high != math.inf:
            gap_high = _smallest_gap_reaching(high_water_mark, daily_high)
        if gap_low is None or gap_high is None:
            return _NEVER_CALM
        return Calm(drawdown_low, drawdown_high, high_water_mark, gap_low, gap_high)

    def watch_levels(self, memory: RiskMemory, equity: float, drawdown_pct: float) -> list[Notice]:
        """The drawdown warning and the daily drawdown, after a mark or a fill.

        One alert per measure at a time: a crossing of the limit says more than one of its
        warning, so the warning is taken as given.
        """
        config = self.config
        notices: list[Notice] = []
        warning = config.drawdown_warning_pct
        # At the limit the halt says more (after a fill, the next mark halts).
        if warning is not None and drawdown_pct < config.max_drawdown_pct:
            if drawdown_pct < warning:
                memory.drawdown_warned = False
            elif not memory.drawdown_warned:
                memory.drawdown_warned = True
                notices.append(
                    Notice(
                        "WARNING",
                        reasons.DRAWDOWN_WARNING,
                        f"Drawdown {drawdown_pct:.2f}% from the high-water mark reached the "
                        f"warning level {warning:g}% (limit {config.max_drawdown_pct:g}%).",
                    )
                )
        if not self._watches_day_drawdown:
            return notices
        high_water_mark = memory.day_high_water_mark = max(memory.day_high_water_mark, equity)
        daily = _drawdown_pct(high_water_mark, equity)
        limit = config.max_daily_drawdown_pct
        if limit is not None and daily >= limit:
            if not memory.daily_limit_hit:
                memory.daily_limit_hit = True
                memory.daily_drawdown_warned = True
                notices.append(
                    Notice(
                        "CRITICAL",
                        reasons.DAILY_DRAWDOWN_LIMIT_HIT,
                        f"Daily drawdown reached: {daily:.2f}% from the day's high-water mark "
                        f"(limit {limit:g}%). Only exits until the next UTC day.",
                        moves_state=True,
                    )
                )
            return notices
        warning = config.daily_drawdown_warning_pct
        if warning is not None:
            if daily < warning:
                memory.daily_drawdown_warned = False
            elif not memory.daily_drawdown_warned:
                memory.daily_drawdown_warned = True
                limit_text = f" (limit {limit:g}%)" if limit is not None else ""
                notices.append(
                    Notice(
                        "WARNING",
                        reasons.DAILY_DRAWDOWN_WARNING,
                        f"Daily drawdown {daily:.2f}% from the day's high-water mark reached "
                        f"the warning level {warning:g}%{limit_text}.",
                    )
                )
        return notices
