"""The log port: what every transport (the embedded log, Kafka) offers the engine.

One contract test suite (``tests/contract/test_log_port.py``) runs against every
implementation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class LogError(RuntimeError):
    """A log that cannot be used as asked; the message is one line for the user."""


class CorruptLog(LogError):
    """Committed data that cannot be read back exactly: a damaged batch, a gap in the
    offsets, a missing or shortened segment, inconsistent metadata. Nothing reads past it
    and nothing cuts it; the message names the topic, partition, file and offset."""


CorruptRecord = CorruptLog  # the earlier name


class Record(NamedTuple):
    """One record as read back. A tuple: a log yields millions of them."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    end_offsets: tuple[int, ...]

    @property
    def records(self) -> int:
        return sum(self.end_offsets)


class EventLog(Protocol):
    identity: str  # which log this is (its directory, or its broker): keys checkpoints
    # Whether ``end_offset`` is exactly the count of records (the embedded log), or may
    # fall short of it (some brokers report the base offset of the last batch).
    exact_end_offsets: bool

    def create_topic(self, topic: str, partitions: int | None = None) -> int: ...

    def partitions(self, topic: str) -> int: ...

    def topic_names(self) -> list[str]: ...

    def open_for_writing(self) -> None: ...

    def append(self, topic: str, key: str, records: list[tuple[int, bytes]]) -> tuple[int, int]:
        """Append ``(timestamp, value)`` records under ``key``; (partition, first offset)."""
        ...

    def commit(self) -> None:
        """Everything appended so far is durable when this returns."""
        ...

    def end_offset(self, topic: str, partition: int) -> int: ...

    def read(
        self,
        topic: str,
        partition: int,
        from_offset: int = 0,
        to_offset: int | None = None,
        *,
        verify: bool = True,
    ) -> Iterator[Record]: ...

    def offset_for_time(self, topic: str, partition: int, timestamp: int) -> int: ...

    def close(self) -> None: ...


def describe(log: EventLog) -> list[TopicInfo]:
    """Every topic of ``log`` with its partitions and their end offsets."""
    return [
        TopicInfo(
            name,
            log.partitions(name),
            tuple(log.end_offset(name, p) for p in range(log.partitions(name))),
        )
        for name in log.topic_names()
    ]
