"""RiskMemory: what the Risk Engine remembers between candles, beyond the portfolio.

It is part of the pipeline's state (snapshots carry it), so it holds plain values only.
Times are candle times in epoch milliseconds, never the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from domain.events.alerts import AlertLevel


@dataclass(slots=True)
class RiskMemory:
    # The automatic kill switch: on after a CRITICAL alert, for the rest of the run.
    kill_switch_tripped: bool = False
    # Cooldowns: no new entry before these times (per symbol, or in any symbol).
    loss_cooldown_until: dict[str, int] = field(default_factory=dict)
    stop_cooldown_until: dict[str, int] = field(default_factory=dict)
    global_cooldown_until: int | None = None
    # Decision times of approved orders within the longest rate window, oldest first.
    order_times: list[int] = field(default_factory=list)
    # Losing exits in a row, and whether they reached the limit (REDUCING until lifted).
    losing_streak: int = 0
    losing_streak_hit: bool = False
    # The UTC day's high-water mark of equity, and whether the daily limit was hit today.
    day_high_water_mark: float = 0.0
    daily_limit_hit: bool = False
    # Warnings fire once per crossing; these say a crossing is current (re-armed below).
    drawdown_warned: bool = False
    daily_drawdown_warned: bool = False

    @property
    def reducing(self) -> bool:
        """Whether something holds the portfolio to exits only."""
        return self.daily_limit_hit or self.losing_streak_hit


class Notice(NamedTuple):
    """An alert the Risk Engine's watch raises; ``moves_state`` if it changes the state."""

    level: AlertLevel
    code: str
    message: str
    moves_state: bool = False
