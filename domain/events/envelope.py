"""The envelope every event carries, and the base class of all events."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

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
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    event_id: str
    run_id: str
    sequence: int
    schema_version: int = SCHEMA_VERSION
    causation_id: str | None = None
    timestamp: int
