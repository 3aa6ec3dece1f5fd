"""``sma_cross``: long-only simple-moving-average crossover."""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, ClassVar

from pydantic import Field, model_validator

from domain.events.market import Bar
from domain.state import StateModel
from domain.strategies.base import SignalIntent, StrategyParams


class SmaCrossParams(StrategyParams):
    fast: int = Field(default=10, ge=1, le=100_000)
    slow: int = Field(default=30, ge=2, le=100_000)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> SmaCrossParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")
        return self


class SmaCrossState(StateModel):
    closes: list[float]  # the ring buffer of the last ``slow`` closes, as it lies
    count: int  # candles seen
    sum_fast: float
    sum_slow: float
    prev_side: int | None  # -1, 1 or None, as ``_prev_side``


class SmaCross:
    """BUY when the fast SMA of closes crosses above the slow one, SELL when it crosses below.

    A cross is a change of sign of ``fast SMA - slow SMA`` between the last candle on which
    that difference was non-zero and this one (the definition of backtrader's ``CrossOver``).
    A tie (both averages equal) is no side at all: a touch that returns to the side it came
    from is no cross, and a touch that passes through is one cross, on the candle where the
    difference becomes non-zero on the other side. The first non-zero difference of a run has
    nothing before it to cross (a trend already under way is not signalled), even when the
    windows tied until then. So the first possible signal comes on candle ``slow + 1``.

    Both averages share one ring buffer of the last ``slow`` closes: two additions and two
    subtractions per candle, whatever the lengths. When the two averages are so close that
    rounding could decide the comparison (within a billionth of the price), the windows are
    summed exactly instead, so a tie is recognised as one and rounding never makes a cross.
    """

    strategy_id: ClassVar[str] = "sma_cross"
    params_model: ClassVar[type[SmaCrossParams]] = SmaCrossParams

    __slots__ = ("_count", "_prev_side", "_ring", "_sum_fast", "_sum_slow", "params")

    def __init__(self, params: SmaCrossParams) -> None:
        self.params = params
        self._ring = [0.0] * params.slow
        self._count = 0
        self._sum_fast = 0.0
        self._sum_slow = 0.0
        # Sign of fast - slow on the last candle where it was non-zero; None before that.
        self._prev_side: int | None = None

    def on_candle(self, candle: Bar) -> SignalIntent | None:
        fast_len, slow_len = self.params.fast, self.params.slow
        ring = self._ring
        i = self._count
        close = candle.close
        slot = i % slow_len
        leaving_slow = ring[slot]  # 0.0 until the window is full
        leaving_fast = ring[(i - fast_len) % slow_len] if i >= fast_len else 0.0
        ring[slot] = close
        self._count = i = i + 1
        self._sum_fast += close - leaving_fast
        self._sum_slow += close - leaving_slow
        if i < slow_len:
            return None
        slow_avg = self._sum_slow / slow_len
        diff = self._sum_fast / fast_len - slow_avg
        tolerance = 1e-9 * abs(slow_avg)
        if diff > tolerance:
            side = 1
        elif diff < -tolerance:
            side = -1
        else:
            side = self._exact_side()
        if side == 0:
            return None  # a tie keeps the side the averages were on before it
        prev = self._prev_side
        self._prev_side = side
        if prev == side or prev is None:
            return None
        return _CROSS_UP if side > 0 else _CROSS_DOWN

    def state(self) -> dict[str, Any]:
        return SmaCrossState(
            closes=list(self._ring),
            count=self._count,
            sum_fast=self._sum_fast,
            sum_slow=self._sum_slow,
            prev_side=self._prev_side,
        ).model_dump()

    def restore(self, state: Mapping[str, Any]) -> None:
        values = SmaCrossState.model_validate(state)
        if len(values.closes) != self.params.slow:
            raise ValueError(f"{len(values.closes)} closes kept, not slow={self.params.slow}")
        if values.prev_side not in (-1, 1, None):
            raise ValueError(f"no side {values.prev_side}")
        self._ring = list(values.closes)
        self._count = values.count
        self._sum_fast = values.sum_fast
        self._sum_slow = values.sum_slow
        self._prev_side = values.prev_side

    def _exact_side(self) -> int:
        """Sign of fast SMA - slow SMA in exact rational arithmetic; resyncs the sums."""
        ring, slow_len, fast_len = self._ring, self.params.slow, self.params.fast
        newest = (self._count - 1) % slow_len
        fast = [ring[(newest - k) % slow_len] for k in range(fast_len)]
        exact_fast = sum((Fraction(x) for x in fast), Fraction(0))
        exact_slow = sum((Fraction(x) for x in ring), Fraction(0))
        self._sum_fast = math.fsum(fast)
        self._sum_slow = math.fsum(ring)
        difference = exact_fast * slow_len - exact_slow * fast_len
        return (difference > 0) - (difference < 0)


_CROSS_UP = SignalIntent("BUY", "SMA_CROSS_UP")
_CROSS_DOWN = SignalIntent("SELL", "SMA_CROSS_DOWN")
