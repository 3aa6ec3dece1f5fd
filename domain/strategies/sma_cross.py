"""``sma_cross``: long-only simple-moving-average crossover."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from domain.events.market import Candle
from domain.strategies.base import SignalIntent, StrategyParams
from domain.strategies.indicators import RollingMean


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
    possible signal comes on candle ``slow + 1``.
    """

    strategy_id: ClassVar[str] = "sma_cross"
    params_model: ClassVar[type[SmaCrossParams]] = SmaCrossParams

    def __init__(self, params: SmaCrossParams) -> None:
        self.params = params
        self._fast = RollingMean(params.fast)
        self._slow = RollingMean(params.slow)
        self._prev_fast: float | None = None
        self._prev_slow: float | None = None

    def on_candle(self, candle: Candle) -> SignalIntent | None:
        fast = self._fast.update(candle.close)
        slow = self._slow.update(candle.close)
        prev_fast, prev_slow = self._prev_fast, self._prev_slow
        self._prev_fast, self._prev_slow = fast, slow
        if fast is None or slow is None or prev_fast is None or prev_slow is None:
            return None
        if prev_fast <= prev_slow and fast > slow:
            return SignalIntent("BUY", "SMA_CROSS_UP")
        if prev_fast >= prev_slow and fast < slow:
            return SignalIntent("SELL", "SMA_CROSS_DOWN")
        return None
