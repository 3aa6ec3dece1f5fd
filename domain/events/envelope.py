"""The envelope every event carries, and the base class of all events."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = 1


def event_id_for(run_id: str, stream: str, sequence: int) -> str:
    """Derive an event id from its run, its stream (the event type) and its position.

    Ids are derived, never random: the same run produces the same ids on every backend.
    """
    return f"{run_id}:{stream}:{sequence}"


class Sequencer:
    """Hands out dense per-type sequence numbers and the derived ids of one run's events.

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

    def positions(self) -> dict[str, int]:
        """The next sequence of each event type handed out so far."""
        return dict(self._next)


class Event(BaseModel):
    """Base of every event: frozen, strict about unknown fields, JSON on the wire.

    Envelope fields come first on the wire, then the seed's payload fields (R9).
    ``sequence`` numbers the events of one type within one run, from 0, without gaps.
    ``causation_id`` is the id of the event that caused this one (None for inputs).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    event_id: str
    run_id: str
    sequence: int
    schema_version: int = SCHEMA_VERSION
    causation_id: str | None = None
    timestamp: int
