"""Event types by wire name, and reading payloads of older schema versions.

Reading an old log never breaks: each event class declares its version and, beside its
fields, the steps from older ones (``domain.events.envelope.Event``); a payload of version
K is passed through its type's steps until it reaches the current version, then
validated. A version with no step from it, or newer than its type's, is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from domain.events.alerts import Alert
from domain.events.envelope import SCHEMA_VERSION, Event
from domain.events.execution import SimulatedOrder, SimulatedTrade
from domain.events.intensity import IntensityChanged
from domain.events.market import DeadLetter, MarketDataCompleted, MarketDataEvent
from domain.events.portfolio import PortfolioSnapshot, PositionState
from domain.events.risk import RiskDecision, RiskState
from domain.events.run import BacktestRunMetadata, RunCompleted
from domain.events.signals import StrategySignal
from domain.versions import Payload, Upcaster, lift


class UnknownEventType(ValueError):
    pass


class EventRegistry:
    """The event classes a reader knows, by wire name, with their versions and steps."""

    def __init__(self, classes: Iterable[type[Event]]) -> None:
        self.types: Mapping[str, type[Event]] = {cls.event_type: cls for cls in classes}
        # (type, from_version) -> the step to from_version + 1, as each class declares.
        self.upcasters: Mapping[tuple[str, int], Upcaster] = {
            (name, older): step
            for name, cls in self.types.items()
            for older, step in cls.upcasters.items()
        }

    def current_version(self, event_type: object) -> int:
        cls = self.types.get(str(event_type))
        return SCHEMA_VERSION if cls is None else cls.current_version

    def upcast(
        self, payload: Payload, upcasters: Mapping[tuple[str, int], Upcaster] | None = None
    ) -> Payload:
        """Lift ``payload`` to the current schema version of its type (through
        ``upcasters`` if given, else the classes' own steps). An absent version is 1."""
        event_type = str(payload.get("type"))
        steps = self.upcasters if upcasters is None else upcasters
        return lift(
            payload,
            payload.get("schema_version", 1),
            self.current_version(event_type),
            {older: step for (name, older), step in steps.items() if name == event_type},
            event_type,
            "schema_version",
        )

    def validate(self, payload: Payload) -> Event:
        """Turn a decoded JSON object into its event model, upcasting old versions first."""
        event_type = payload.get("type")
        cls = self.types.get(str(event_type))
        if cls is None:
            raise UnknownEventType(f"unknown event type {event_type!r}")
        return cls.model_validate(self.upcast(payload))


REGISTRY = EventRegistry(
    [
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
    ]
)
EVENT_TYPES: Mapping[str, type[Event]] = REGISTRY.types
UPCASTERS: Mapping[tuple[str, int], Upcaster] = REGISTRY.upcasters


def upcast(payload: Payload, upcasters: Mapping[tuple[str, int], Upcaster] = UPCASTERS) -> Payload:
    """Lift ``payload`` to the current schema version of its type."""
    return REGISTRY.upcast(payload, upcasters)


def validate_event(payload: Payload) -> Event:
    """Turn a decoded JSON object into its event model, upcasting old versions first."""
    return REGISTRY.validate(payload)
