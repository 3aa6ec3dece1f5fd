"""A stored log: one event of every type exactly as a run wrote it, at version 1 of each.

``tests/domain/fixtures/events_v1.jsonl`` was taken from the golden run's log (and, for
``intensity_changed``, from the same candles with the adaptive intensity on). It is never
regenerated: it stands for the old logs a later version of an event must still read.
"""

from __future__ import annotations

from pathlib import Path

import orjson

STORED_V1 = Path(__file__).resolve().parent.parent / "domain" / "fixtures" / "events_v1.jsonl"


def stored_v1() -> dict[str, bytes]:
    """The stored events' wire bytes, by type."""
    lines = STORED_V1.read_bytes().splitlines()
    return {orjson.loads(line)["type"]: line for line in lines}
