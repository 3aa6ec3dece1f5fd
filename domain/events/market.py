"""Market data: the candles that drive everything else (topic ``market_data``)."""

from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple, Protocol

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


class Bar(Protocol):
    """What the engine reads of a candle: a ``Candle``, or a decoded market_data event
    (its model or its view, see ``streams.event_views``), so a replay can fold what it
    decodes without building a candle of each."""

    @property
    def symbol(self) -> str: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def open(self) -> float: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...
    @property
    def volume(self) -> float: ...
    @property
    def interval_ms(self) -> int: ...


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
        return candle_of(self, interval_ms)

    @property
    def interval_ms(self) -> int:
        return cached_interval_ms(self.interval)


def candle_of(event: Any, step_ms: int) -> Candle:
    """The candle a market_data event carries: its model, or anything with its fields (a
    decoded view); ``step_ms`` is its interval in milliseconds."""
    return Candle(
        event.symbol,
        event.timestamp,
        event.open,
        event.high,
        event.low,
        event.close,
        event.volume,
        event.interval,
        step_ms,
    )


class DeadLetter(Event):
    """An input that could not be used, kept with the reason instead of being dropped."""

    type: Literal["dead_letter"] = "dead_letter"
    source: str
    line: int
    raw: str
    reason: str


class MarketDataCompleted(Event):
    """The explicit end of a finite run's input: no more candles will come for this run."""

    type: Literal["market_data_completed"] = "market_data_completed"
    candles: int
    dead_letters: int


_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def interval_ms(interval: str) -> int:
    """``"30m"`` -> 1,800,000; the inverse of the interval names the CSV source gives."""
    for unit in ("ms", "s", "m", "h", "d"):
        number = interval.removesuffix(unit)
        if number != interval and number.isdigit() and int(number) > 0:
            return int(number) * _UNITS_MS[unit]
    raise ValueError(f"not an interval: {interval!r} (e.g. 1m, 30m, 4h, 1d)")


@functools.cache
def cached_interval_ms(interval: str) -> int:
    """``interval_ms`` of the few interval names a log holds, each worked out once."""
    return interval_ms(interval)
