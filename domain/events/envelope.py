"""The envelope every event carries, the base class of all events, and the one helper
that fills an event's envelope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from domain.versions import Upcaster, declared_upcasters

# An event type's first schema version, and the one every type has on the wire so far. A
# type that moves on redeclares ``schema_version`` with its new default and, beside it,
# ``upcast_vK_vK1`` steps from each older version (see ``domain.versions``).
SCHEMA_VERSION = 1


def event_id_for(run_id: str, stream: str, sequence: int) -> str:
    """Derive an event id from its run, its stream (the event type) and its position.

    Ids are derived, never random: the same run produces the same ids on every backend.
    """
    return f"{run_id}:{stream}:{sequence}"


class Event(BaseModel):
    """Base of every event: frozen, strict about unknown fields, JSON on the wire.

    Envelope fields come first on the wire, then the seed's payload fields (R9).
    ``sequence`` numbers the events of one type within one run, from 0, without gaps.
    ``causation_id`` is the id of the event that caused this one (None for inputs).

    Each event class has its own version: the default of its ``schema_version`` field,
    which is what it writes (``current_version``), with the steps from older versions
    declared beside its fields (``upcasters``), both worked out when the class is made.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]  # the wire name: the "type" field's value
    current_version: ClassVar[int]
    upcasters: ClassVar[Mapping[int, Upcaster]] = {}

    type: str
    event_id: str
    run_id: str
    sequence: int
    schema_version: int = SCHEMA_VERSION
    causation_id: str | None = None
    timestamp: int

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.event_type = cls.model_fields["type"].default
        cls.current_version = cls.model_fields["schema_version"].default
        cls.upcasters = declared_upcasters(cls, cls.current_version)


E = TypeVar("E", bound=Event)


class Sequencer:
    """Hands out dense per-type sequence numbers and the derived ids of one run's events,
    and fills the envelope of each new event with them.

    Each event type has exactly one producer (market data ingestion or the engine), so
    each producer keeps its own sequencer and ids never collide.
    """

    __slots__ = ("_next", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._next: dict[str, int] = {}

    def next_id(self, event_type: str) -> tuple[int, str]:
        sequence = self._next.get(event_type, 0)
        self._next[event_type] = sequence + 1
        return sequence, event_id_for(self.run_id, event_type, sequence)

    def new_event(self, cls: type[E], timestamp: int, causation_id: str | None, **fields: Any) -> E:
        """The next event of ``cls``: its envelope (id, run, sequence, cause, time) filled
        here, ``fields`` the rest; validated as ``cls(...)`` would."""
        event_type = cls.event_type
        sequence = self._next.get(event_type, 0)
        self._next[event_type] = sequence + 1
        fields["event_id"] = event_id_for(self.run_id, event_type, sequence)
        fields["run_id"] = self.run_id
        fields["sequence"] = sequence
        fields["causation_id"] = causation_id
        fields["timestamp"] = timestamp
        # What ``cls(**fields)`` runs, without a second copy of the keywords: events are
        # made on the engine's hot path. The wire's field order is the model's, not this.
        event: E = cls.__pydantic_validator__.validate_python(fields)
        return event

    def positions(self) -> dict[str, int]:
        """The next sequence of each event type handed out so far."""
        return dict(self._next)

    def resume(self, positions: Mapping[str, int]) -> None:
        """Go on from ``positions`` (what ``positions`` gave), as if those were handed out."""
        self._next = dict(positions)
