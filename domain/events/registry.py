"""Event types by wire name, and the upcasters that lift old schema versions.

Reading an old log never breaks: a payload of version N is passed through
``UPCASTERS[(type, N)]`` until it reaches the current version, then validated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from domain.events.alerts import Alert
from domain.events.envelope import SCHEMA_VERSION, Event
from domain.events.execution import SimulatedOrder, SimulatedTrade
from domain.events.intensity import IntensityChanged
from domain.events.market import DeadLetter, MarketDataCompleted, MarketDataEvent
from domain.events.portfolio import PortfolioSnapshot, PositionState
from domain.events.risk import RiskDecision, RiskState
from domain.events.run import BacktestRunMetadata, RunCompleted
from domain.events.signals import StrategySignal

EVENT_TYPES: Mapping[str, type[Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        MarketDataEvent,
        MarketDataCompleted,
        DeadLetter,
        StrategySignal,
        RiskDecision,
        RiskState,
        IntensityChanged,
        SimulatedOrder,
        SimulatedTrade,
        Alert,
        PositionState,
        PortfolioSnapshot,
        BacktestRunMetadata,
        RunCompleted,
    )
}

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]

# (type, from_version) -> function returning the payload at from_version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class UnknownEventType(ValueError):
    pass


def upcast(payload: Payload, upcasters: Mapping[tuple[str, int], Upcaster] = UPCASTERS) -> Payload:
    """Lift ``payload`` to the current schema version of its type."""
    event_type = payload.get("type")
    version = payload.get("schema_version", 1)
    if type(version) is not int:
        raise ValueError(f"{event_type} has schema version {version!r}, not an integer")
    while version < SCHEMA_VERSION:
        step = upcasters.get((str(event_type), version))
        if step is None:
            raise ValueError(f"no upcaster for {event_type} v{version}")
        payload = step(payload)
        version += 1
        payload["schema_version"] = version
    return payload


def validate_event(payload: Payload) -> Event:
    """Turn a decoded JSON object into its event model, upcasting old versions first."""
    event_type = payload.get("type")
    cls = EVENT_TYPES.get(str(event_type))
    if cls is None:
        raise UnknownEventType(f"unknown event type {event_type!r}")
    return cls.model_validate(upcast(payload))
