"""The one strategy interface every strategy implements.

A strategy sees candles of one symbol, in time order, and may answer with a signal intent.
It knows nothing of balances, positions or limits (R2); those belong to the Risk Engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict

from domain.events.market import Bar
from domain.events.signals import Direction


class SignalIntent(NamedTuple):
    direction: Direction
    reason: str
    strength: float | None = None


class StrategyParams(BaseModel):
    """Base of each strategy's parameters: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Strategy(Protocol):
    strategy_id: ClassVar[str]

    def on_candle(self, candle: Bar) -> SignalIntent | None:
        """Consume the next candle of this strategy's symbol; O(1) work."""
        ...

    def state(self) -> dict[str, Any]:
        """What the candles so far left in this strategy (its indicators), as plain data
        (numbers, strings, lists, dicts) for an engine snapshot; its parameters are not
        part of it: they come from the run's configuration."""
        ...

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take ``state`` (what ``state()`` gave, in a strategy of the same parameters),
        as if this strategy had seen those candles; ValueError if it cannot be."""
        ...
