"""The engine's state between two candles, as a typed, versioned value: a snapshot's payload.

``PipelineState`` is the composition of every stateful part's own state (strategies'
indicators per symbol, pending orders, the portfolio, the statistics, the trading state
and the Risk Engine's memory, the adaptive intensity, the per-type sequences, the
counters); what is not in it (the strategy factory, the Risk Engine, costs) comes from the
run's configuration.

Guarantees:

1. ``encode_state`` and ``decode_state`` are inverse: every value, floats included (shortest
   round-trip text; non-finite ones as ``Infinity``/``NaN``), every dict in its order.
2. The encoding is JSON with a ``state_version``; nothing is pickled, so reading a state
   never runs code it names.
3. A state of an older ``state_version`` is lifted by the ``upcast_vK_vK1`` steps declared
   on ``PipelineState`` (see ``domain.versions``) before it is validated; a newer one, one
   with no step, or one that is not a whole state of this shape is refused with
   ``EngineStateError`` and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from domain.events import SimulatedOrder
from domain.events.risk import TradingState
from domain.intensity import IntensityState
from domain.portfolio.ledger import PortfolioState
from domain.risk.memory import RiskMemory
from domain.state import StateModel
from domain.statistics import PerformanceState
from domain.versions import Upcaster, VersionError, declared_upcasters, lift

# Version 1: the first state written as data (snapshots before it were pickled, and are
# refused by their code version).
STATE_VERSION = 1


class EngineStateError(ValueError):
    """A snapshot's payload this code does not restore: the reason is in the message."""


class StrategyState(StateModel):
    strategy_id: str  # the strategy that gave ``state``: only the same kind restores it
    state: dict[str, Any]


class PipelineState(StateModel):
    state_version: int = STATE_VERSION
    strategy_id: str  # the run's strategy, as its signals name it
    strategies: dict[str, StrategyState]  # by symbol, in the order they first had a candle
    pending_orders: list[SimulatedOrder]  # approved, waiting for their symbol's next candle
    portfolio: PortfolioState
    statistics: PerformanceState
    trading_state: TradingState
    risk_memory: RiskMemory
    intensity: IntensityState | None  # None: the adaptive intensity is off
    sequences: dict[str, int]  # the next sequence of each event type
    bar_timestamp: int | None  # the open bar, which the next new timestamp closes
    equity: float  # after the latest candle
    in_market: bool
    day: int | None  # the UTC day of the latest candle
    orders_placed: int
    candles: int
    signals: int
    fills: int
    rejected: int
    last_timestamp: int
    last_interval_ms: int

    # Steps from older versions go here, as static methods ``upcast_vK_vK1(payload) ->
    # payload`` on the JSON object (see ``domain.versions``), with STATE_VERSION raised.


_STEPS: Mapping[int, Upcaster] = declared_upcasters(PipelineState, STATE_VERSION)


def encode_state(state: PipelineState) -> bytes:
    return PipelineState.__pydantic_serializer__.to_json(state)


def decode_state(payload: bytes, steps: Mapping[int, Upcaster] = _STEPS) -> PipelineState:
    """The state in ``payload``, lifted to ``STATE_VERSION`` (through ``steps``, the
    declared ones unless given); EngineStateError says why it cannot be."""
    try:
        data = json.loads(payload)  # Infinity and NaN included; floats read exactly
    except ValueError as exc:  # not JSON, or not UTF-8
        raise EngineStateError(f"not an engine state: {exc}") from None
    if not isinstance(data, dict):
        raise EngineStateError("not an engine state: not a JSON object")
    try:
        data = lift(
            data, data.get("state_version"), STATE_VERSION, steps, "engine state", "state_version"
        )
        return PipelineState.model_validate(data)
    except VersionError as exc:
        raise EngineStateError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise EngineStateError(
            f"not an engine state of this code: {where}: {first['msg']}"
        ) from None
    except (TypeError, LookupError) as exc:
        raise EngineStateError(f"cannot upcast this engine state: {exc}") from None
