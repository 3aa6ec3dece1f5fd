"""Signals a strategy gave, given again: replaying the Risk Engine and the simulator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from domain.events.market import Bar
from domain.strategies.base import SignalIntent


class RecordedSignals:
    """Answers each candle with the signal the run's strategy gave at its close, if any.

    ``intents`` are keyed by symbol and decision time (the candle's close: its timestamp
    plus its interval), as a ``signal`` event records them.
    """

    strategy_id: ClassVar[str] = "recorded"

    __slots__ = ("_intents",)

    def __init__(self, intents: Mapping[tuple[str, int], SignalIntent]) -> None:
        self._intents = intents

    def on_candle(self, candle: Bar) -> SignalIntent | None:
        return self._intents.get((candle.symbol, candle.timestamp + candle.interval_ms))

    def state(self) -> dict[str, Any]:
        return {}  # what it answers is given, not learnt from the candles

    def restore(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError("recorded signals keep no state")
