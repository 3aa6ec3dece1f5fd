"""The log port: what every transport (the embedded log, Kafka) offers the engine.

One contract test suite (``tests/contract/test_log_port.py``) runs against every
implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable


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


# (key, first offset, values at consecutive offsets): records of one key read together.
KeyedValues = tuple[str, int, list[bytes]]
# (topic, partition, first offset, values at consecutive offsets): what a follower hands out.
Group = tuple[str, int, int, list[bytes]]


class EventLog(Protocol):
    """What every log offers. Capabilities only some logs have are the protocols below
    (``Followable``, ``SharedWriting``), checked with ``isinstance`` on the protocol, never
    on a concrete log."""

    identity: str  # which log this is (its directory, or its broker): keys checkpoints
    # Whether ``end_offset`` is exactly the count of records (the embedded log), or may
    # fall short of it (some brokers report the base offset of the last batch).
    exact_end_offsets: bool
    # Whether a forked process can go on reading through this object (reads that open
    # their own files), as a parallel rebuild's workers do.
    readable_after_fork: bool
    # Whether the log is a broker's: a backtest then goes through it, its candles
    # published and read back, to prove the transport (the embedded log runs one fused).
    brokered: bool

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

    def read_values(
        self, topic: str, partition: int, from_offset: int = 0, to_offset: int | None = None
    ) -> Iterator[KeyedValues]:
        """``read`` for a reader of values only, in groups of one key at consecutive
        offsets (a log that stores batches gives each stored batch whole, without a record
        per value); CRCs are always checked."""
        ...

    def offset_for_time(self, topic: str, partition: int, timestamp: int) -> int: ...

    def close(self) -> None: ...


def keyed_values(records: Iterable[Record]) -> Iterator[KeyedValues]:
    """Records grouped by key and consecutive offsets: ``read_values`` for a log that
    reads record by record."""
    key: str | None = None
    first = expected = 0
    values: list[bytes] = []
    for record in records:
        if record.key != key or record.offset != expected:
            if values:
                yield key or "", first, values
            key, first, values = record.key, record.offset, []
        values.append(record.value)
        expected = record.offset + 1
    if values:
        yield key or "", first, values


class LogStream(Protocol):
    """A follower: each step one poll's groups, or an empty list once a poll brought
    nothing (the caller's moment to check for a stop)."""

    def __iter__(self) -> Iterator[list[Group]]: ...

    def __next__(self) -> list[Group]: ...

    def lag(self) -> dict[tuple[str, int], int]:
        """Records each partition is behind its end, as far as known without asking."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Followable(Protocol):
    """A log that hands records over as they arrive, with one long-lived consumer
    (Kafka). A log without it is followed by polling ``read``."""

    def follow(self, positions: Mapping[tuple[str, int], int], poll_ms: int = 100) -> LogStream:
        """Follow ``positions`` ((topic, partition) -> the next offset to hand out)."""
        ...


@runtime_checkable
class SharedWriting(Protocol):
    """A log on this machine whose partitions a forked helper process can append to under
    the writer's lock, handing where they end back to the writer's next commit (the
    embedded log: a backtest's candles are written on the other core)."""

    root: Path

    def adopt(self, positions: Mapping[tuple[str, int], Any]) -> None:
        """What a helper wrote and synced; the next commit covers it."""
        ...


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
