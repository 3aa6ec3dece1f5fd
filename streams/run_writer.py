"""What every mode of running writes with: a run's writer and its ingest bookkeeping.

``RunWriter`` buffers one run's records per topic, appends them in batches keyed by the
run id (so one run stays in one partition, in order), and hashes what it wrote: the run's
``log_digest`` comes from here. ``Ingest`` is Market Data Ingestion's own part of a run:
its dead letters and its explicit end-of-input marker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from domain.events import (
    Candle,
    DeadLetter,
    Event,
    MarketDataCompleted,
    RunCompleted,
    Sequencer,
)
from streams import topics
from streams.codec import encode, encode_market_data
from streams.csv_source import BadRow
from streams.digest import TopicDigest, combine
from streams.log_port import EventLog
from streams.market_data_publisher import MarketDataSink


class RunIdError(ValueError):
    """A run id that cannot be used; the message is one line for the user."""


class RunExists(RunIdError):
    pass


# orjson hands back each value in a 4 KiB allocation, so batches stay small to keep
# memory flat; 2048 records still amortise the per-batch work.
BATCH = 2048


@dataclass(frozen=True)
class BacktestOutcome:
    run_id: str
    completed: RunCompleted
    log_digest: str
    # The end offset this run reached in each (topic, partition) its events went to.
    written: dict[tuple[str, int], int] = field(default_factory=dict)
    # What the market-data sink reported once every candle was appended (if there was one).
    sink_report: Any = None


class Ingest:
    """Market Data Ingestion's own events: dead letters and the end-of-input marker."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.ids = Sequencer(run_id)
        self.bad_rows: list[BadRow] = []
        self.dead_letters = 0
        self.last_timestamp = 0
        self.last_interval_ms = 0

    def drain(self) -> list[Event]:
        events: list[Event] = []
        for bad in self.bad_rows:
            seq, eid = self.ids.next_id("dead_letter")
            events.append(
                DeadLetter(
                    event_id=eid,
                    run_id=self.run_id,
                    sequence=seq,
                    timestamp=bad.timestamp,
                    source=bad.source,
                    line=bad.line,
                    raw=bad.raw[:1000],
                    reason=bad.reason,
                )
            )
        self.dead_letters += len(self.bad_rows)
        self.bad_rows.clear()
        return events

    def completed(self, candles: int) -> MarketDataCompleted:
        seq, eid = self.ids.next_id("market_data_completed")
        end = self.last_timestamp + self.last_interval_ms if candles else 0
        return MarketDataCompleted(
            event_id=eid,
            run_id=self.run_id,
            sequence=seq,
            timestamp=end,
            candles=candles,
            dead_letters=self.dead_letters,
        )


class RunWriter:
    """Buffers one run's records per topic, appends them in batches, hashes what it wrote."""

    def __init__(
        self, log: EventLog, run_id: str, market_data_sink: MarketDataSink | None = None
    ) -> None:
        self.log = log
        self.run_id = run_id
        self._sink = market_data_sink
        self._pending: dict[str, list[tuple[int, bytes]]] = {t: [] for t in topics.ALL_TOPICS}
        self._digests = {t: TopicDigest() for t in topics.ALL_TOPICS}
        # Where this run's records begin, per topic: (partition, offset).
        self.first_offsets: dict[str, tuple[int, int]] = {}
        # Where they end (exclusive), per (topic, partition).
        self.written: dict[tuple[str, int], int] = {}

    def market_data_inline(self, candles: list[Candle], first_sequence: int) -> None:
        """Publish candles from this process (where a second one cannot be forked)."""
        run_id = self.run_id
        records = [
            (candle.timestamp, encode_market_data(run_id, first_sequence + i, candle))
            for i, candle in enumerate(candles)
        ]
        at = self._append(topics.MARKET_DATA, records)
        if self._sink is not None and at is not None:
            self._sink(run_id, at[0], at[1], first_sequence, tuple(zip(*candles, strict=True)))

    def market_data_records(self, records: list[tuple[int, bytes]]) -> None:
        """Append already encoded candles (a replay's copies of the ones it replays)."""
        self._append(topics.MARKET_DATA, records)

    def set_digest(self, topic: str, digest: TopicDigest) -> None:
        self._digests[topic] = digest

    def publish(self, events: Sequence[Event]) -> None:
        topic_of = topics.TOPIC_OF_EVENT
        pending = self._pending
        for event in events:
            pending[topic_of[event.type]].append((event.timestamp, encode(event)))

    def publish_encoded(self, events: Sequence[tuple[Event, bytes]]) -> None:
        """``publish`` for events already encoded (``codec.encode``)."""
        topic_of = topics.TOPIC_OF_EVENT
        pending = self._pending
        for event, raw in events:
            pending[topic_of[event.type]].append((event.timestamp, raw))

    def _append(self, topic: str, records: list[tuple[int, bytes]]) -> tuple[int, int] | None:
        if not records:
            return None
        at = self.log.append(topic, self.run_id, records)
        self.first_offsets.setdefault(topic, at)
        self.written[(topic, at[0])] = at[1] + len(records)
        self._digests[topic].update([value for _, value in records])
        return at

    def flush(self) -> None:
        for topic, records in self._pending.items():
            if records:
                self._append(topic, records)
                records.clear()

    def flush_if_large(self) -> None:
        if sum(len(records) for records in self._pending.values()) >= BATCH:
            self.flush()

    def digest(self) -> str:
        return combine(self._digests)
