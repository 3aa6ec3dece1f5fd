"""``momentum_v1``: channel breakout with a shorter exit channel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from domain.events.market import Bar
from domain.state import StateModel
from domain.strategies.base import SignalIntent, StrategyParams
from domain.strategies.indicators import RollingExtreme, RollingExtremeState


class MomentumParams(StrategyParams):
    lookback: int = Field(default=20, ge=2, le=100_000)
    exit_lookback: int = Field(default=10, ge=1, le=100_000)


class MomentumState(StateModel):
    highest: RollingExtremeState
    lowest: RollingExtremeState
    exit_lowest: RollingExtremeState
    last: Literal["BUY", "SELL"] | None


class MomentumV1:
    """BUY when the close breaks above the highest high of the previous ``lookback`` candles.

    SELL when the close breaks below the lowest low of the previous ``exit_lookback``
    candles. Strength is the breakout distance as a fraction of the channel width, in
    [0, 1]. A direction is signalled once until the opposite one fires.
    """

    strategy_id: ClassVar[str] = "momentum_v1"
    params_model: ClassVar[type[MomentumParams]] = MomentumParams

    def __init__(self, params: MomentumParams) -> None:
        self.params = params
        self._highest = RollingExtreme(params.lookback, maximum=True)
        self._lowest = RollingExtreme(params.lookback, maximum=False)
        self._exit_lowest = RollingExtreme(params.exit_lookback, maximum=False)
        self._last: Literal["BUY", "SELL"] | None = None

    def on_candle(self, candle: Bar) -> SignalIntent | None:
        # Channels of the *previous* candles: read before this candle updates them.
        highest = self._highest.value
        lowest = self._lowest.value
        exit_lowest = self._exit_lowest.value
        self._highest.update(candle.high)
        self._lowest.update(candle.low)
        self._exit_lowest.update(candle.low)
        close = candle.close
        if highest is not None and lowest is not None and close > highest and self._last != "BUY":
            self._last = "BUY"
            width = highest - lowest
            strength = 1.0 if width <= 0 else min(1.0, (close - highest) / width)
            return SignalIntent("BUY", "MOMENTUM_BREAKOUT", strength)
        if exit_lowest is not None and close < exit_lowest and self._last == "BUY":
            self._last = "SELL"
            return SignalIntent("SELL", "MOMENTUM_BREAKDOWN")
        return None

    def state(self) -> dict[str, Any]:
        return MomentumState(
            highest=self._highest.state(),
            lowest=self._lowest.state(),
            exit_lowest=self._exit_lowest.state(),
            last=self._last,
        ).model_dump()

    def restore(self, state: Mapping[str, Any]) -> None:
        values = MomentumState.model_validate(state)
        self._highest.restore(values.highest)
        self._lowest.restore(values.lowest)
        self._exit_lowest.restore(values.exit_lowest)
        self._last = values.last
