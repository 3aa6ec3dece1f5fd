"""Event models, one module per family, and the registry that decodes and upcasts them."""

from domain.events.alerts import Alert
from domain.events.envelope import SCHEMA_VERSION, Event, Sequencer, event_id_for
from domain.events.execution import SimulatedOrder, SimulatedTrade
from domain.events.intensity import IntensityChanged
from domain.events.market import (
    Bar,
    Candle,
    DeadLetter,
    MarketDataCompleted,
    MarketDataEvent,
    candle_of,
    interval_ms,
)
from domain.events.portfolio import PortfolioSnapshot, PositionState
from domain.events.registry import (
    EVENT_TYPES,
    EventRegistry,
    UnknownEventType,
    upcast,
    validate_event,
)
from domain.events.risk import RiskDecision, RiskState
from domain.events.run import BacktestRunMetadata, DataSource, RunCompleted, RunStatistics
from domain.events.signals import StrategySignal

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "Alert",
    "BacktestRunMetadata",
    "Bar",
    "Candle",
    "DataSource",
    "DeadLetter",
    "Event",
    "EventRegistry",
    "IntensityChanged",
    "MarketDataCompleted",
    "MarketDataEvent",
    "PortfolioSnapshot",
    "PositionState",
    "RiskDecision",
    "RiskState",
    "RunCompleted",
    "RunStatistics",
    "Sequencer",
    "SimulatedOrder",
    "SimulatedTrade",
    "StrategySignal",
    "UnknownEventType",
    "candle_of",
    "event_id_for",
    "interval_ms",
    "upcast",
    "validate_event",
]
