"""Market data: the candles that drive everything else (topic ``market_data``)."""

from __future__ import annotations

from typing import Literal, NamedTuple

from domain.events.envelope import Event


class Candle(NamedTuple):
    """One OHLCV bar as the engine processes it. ``timestamp`` is the bar's open time (ms)."""

    symbol: str
    timestamp: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    interval: str
    interval_ms: int


class MarketDataEvent(Event):
    type: Literal["market_data"] = "market_data"
    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    interval: str

    def to_candle(self, interval_ms: int) -> Candle:
        return Candle(
            self.symbol,
            self.timestamp,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.interval,
            interval_ms,
        )


class DeadLetter(Event):
    """An input that could not be used, kept with the reason instead of being dropped."""

    type: Literal["dead_letter"] = "dead_letter"
    source: str
    line: int
    raw: str
    reason: str
