"""``sma_cross``: long-only simple-moving-average crossover."""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import Field, model_validator

from domain.events.market import Candle
from domain.strategies.base import SignalIntent, StrategyParams


class SmaCrossParams(StrategyParams):
    fast: int = Field(default=10, ge=1, le=100_000)
    slow: int = Field(default=30, ge=2, le=100_000)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> SmaCrossParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")
        return self


class SmaCross:
    """BUY when the fast SMA of closes crosses above the slow one, SELL when it crosses below.

    A cross needs both averages on the previous candle and on this one, so the first
    possible signal comes on candle ``slow + 1``. Both averages share one ring buffer of the
    last ``slow`` closes: two additions and two subtractions per candle, whatever the
    lengths. The running sums are re-summed exactly every 1024 candles so rounding cannot
    drift over millions of candles.
    """

    strategy_id: ClassVar[str] = "sma_cross"
    params_model: ClassVar[type[SmaCrossParams]] = SmaCrossParams

    __slots__ = ("_count", "_prev_diff", "_ring", "_sum_fast", "_sum_slow", "params")

    def __init__(self, params: SmaCrossParams) -> None:
        self.params = params
        self._ring = [0.0] * params.slow
        self._count = 0
        self._sum_fast = 0.0
        self._sum_slow = 0.0
        self._prev_diff: float | None = None

    def on_candle(self, candle: Candle) -> SignalIntent | None:
        fast_len, slow_len = self.params.fast, self.params.slow
        ring = self._ring
        i = self._count
        close = candle.close
        slot = i % slow_len
        leaving_slow = ring[slot]  # 0.0 until the window is full
        leaving_fast = ring[(i - fast_len) % slow_len] if i >= fast_len else 0.0
        ring[slot] = close
        self._count = i = i + 1
        if i & 1023 == 0:
            self._resync(i)
        else:
            self._sum_fast += close - leaving_fast
            self._sum_slow += close - leaving_slow
        if i < slow_len:
            return None
        # Compare the averages as fast/f - slow/s, the same quantity a naive loop computes.
        diff = self._sum_fast / fast_len - self._sum_slow / slow_len
        prev = self._prev_diff
        self._prev_diff = diff
        if prev is None:
            return None
        if prev <= 0.0 < diff:
            return _CROSS_UP
        if prev >= 0.0 > diff:
            return _CROSS_DOWN
        return None

    def _resync(self, count: int) -> None:
        ring, slow_len, fast_len = self._ring, self.params.slow, self.params.fast
        newest = (count - 1) % slow_len
        self._sum_fast = math.fsum(
            ring[(newest - k) % slow_len] for k in range(min(fast_len, count))
        )
        self._sum_slow = math.fsum(
            ring[(newest - k) % slow_len] for k in range(min(slow_len, count))
        )


_CROSS_UP = SignalIntent("BUY", "SMA_CROSS_UP")
_CROSS_DOWN = SignalIntent("SELL", "SMA_CROSS_DOWN")
