"""The backtest runner: candles from files through the pipeline into the log.

This is the Market Data Ingestion stage and the transport around the pure pipeline: it
publishes every candle to ``market_data`` and every event the pipeline returns to its
topic, keyed by the run id so one run stays in one partition, in order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from domain.events import (
    BacktestRunMetadata,
    Candle,
    DataSource,
    DeadLetter,
    Event,
    MarketDataCompleted,
    RunCompleted,
    Sequencer,
)
from domain.pipeline import PaperTradingPipeline
from domain.run_config import BacktestConfig, derived_run_id, run_metadata_event
from domain.strategies import strategy_params
from streams import topics
from streams.codec import encode, encode_market_data
from streams.collector import collector_paused
from streams.csv_source import BadRow, CandleSource, merged_candles
from streams.digest import TopicDigest, combine
from streams.embedded_log import EmbeddedLog
from streams.log_port import EventLog
from streams.market_data_publisher import MarketDataPublisher, MarketDataSink, can_fork
from streams.snapshots import SNAPSHOT_EVERY, Snapshot, SnapshotStore

# orjson hands back each value in a 4 KiB allocation, so batches stay small to keep
# memory flat; 2048 records still amortise the per-batch work.
BATCH = 2048


logger = logging.getLogger("cdb.backtest")


class RunIdError(ValueError):
    pass


class RunExists(RunIdError):
    pass


_RUN_ID = re.compile(r"[A-Za-z0-9._:\-]{1,120}")


def code_version() -> str:
    try:
        return f"claire-de-binare {metadata.version('claire-de-binare')}"
    except metadata.PackageNotFoundError:
        return "claire-de-binare (not installed)"


@dataclass(frozen=True)
class BacktestOutcome:
    run_id: str
    completed: RunCompleted
    log_digest: str
    # The end offset this run reached in each (topic, partition) its events went to.
    written: dict[tuple[str, int], int] = field(default_factory=dict)
    # What the market-data sink reported once every candle was appended (if there was one).
    sink_report: Any = None


def existing_run_ids(log: EventLog) -> set[str]:
    if topics.RUNS not in log.topic_names():
        return set()
    return {
        record.key
        for partition in range(log.partitions(topics.RUNS))
        for record in log.read(topics.RUNS, partition, verify=False)
    }


def choose_run_id(log: EventLog, wanted: str | None, derived: str) -> str:
    """The given id (refused if taken), or the derived one with a suffix if it is taken."""
    if wanted is not None and not _RUN_ID.fullmatch(wanted):
        raise RunIdError(f"invalid run id {wanted!r}: 1-120 letters, digits and . _ : - only")
    taken = existing_run_ids(log)
    if wanted is not None:
        if wanted in taken:
            raise RunExists(f"run {wanted!r} is already in the log; choose another --run-id")
        return wanted
    if derived not in taken:
        return derived
    n = 2
    while f"{derived}-{n}" in taken:
        n += 1
    return f"{derived}-{n}"


def prepare_run(
    config: BacktestConfig, sources: Sequence[CandleSource], log: EventLog, run_id: str | None
) -> BacktestRunMetadata:
    """Validate, create the topics, choose the run id: the run's metadata event."""
    params = strategy_params(config.strategy_id, config.strategy_params)
    config = config.model_copy(update={"strategy_params": params.model_dump()})
    log.open_for_writing()
    for topic in topics.ALL_TOPICS:
        log.create_topic(topic)
    chosen = choose_run_id(
        log, run_id, derived_run_id(config.config_hash(), [s.sha256 for s in sources])
    )
    return metadata_of(config, sources, chosen)


def metadata_of(
    config: BacktestConfig, sources: Sequence[CandleSource], run_id: str
) -> BacktestRunMetadata:
    """The metadata of a run of ``config`` over ``sources`` under ``run_id`` (a live run
    of the same sources has the very same)."""
    return run_metadata_event(
        run_id,
        timestamp=min(s.first_timestamp for s in sources),
        code_version=code_version(),
        config=config,
        data_sources=[
            DataSource(symbol=s.symbol, name=s.name, sha256=s.sha256, interval=s.interval)
            for s in sources
        ],
    )


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


def run_backtest(
    config: BacktestConfig,
    sources: Sequence[CandleSource],
    log: EventLog,
    run_id: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    *,
    parallel: bool = True,
    market_data_sink: MarketDataSink | None = None,
    snapshots: SnapshotStore | None = None,
    snapshot_every: int = SNAPSHOT_EVERY,
) -> BacktestOutcome:
    """Run one paper test; every event is durable in ``log`` when this returns.

    On the embedded log the stages run fused, candle by candle, in this process (with
    ``parallel``, and where the platform can fork, market data is written by a second
    process). On any other log (Kafka) the candles go through the broker: see
    ``streams.broker_backtest``. The events written are identical either way.
    ``market_data_sink`` (embedded log only) is handed each batch of candles as appended.
    With ``snapshots`` (embedded log only) the engine's state is saved every
    ``snapshot_every`` candles (at the next batch boundary), for replays and restarts.
    """
    metadata = prepare_run(config, sources, log, run_id)
    if not isinstance(log, EmbeddedLog):
        from streams.broker_backtest import run_through_broker

        return run_through_broker(metadata, sources, log, on_progress)
    run_id = metadata.run_id
    pipeline = PaperTradingPipeline.from_metadata(metadata)
    ingest = Ingest(run_id)
    writer = RunWriter(log, run_id, market_data_sink)
    writer.publish([metadata])
    writer.publish(pipeline.begin(metadata))
    # The run's candles follow each other in their partition from here (the run holds the
    # log's writer lock): candle n is at offset first_candle + n.
    md_partition = topics.partition_for(run_id, log.partitions(topics.MARKET_DATA))
    first_candle = log.end_offset(topics.MARKET_DATA, md_partition)
    next_snapshot = snapshot_every if snapshots is not None else None
    if snapshots is not None:
        snapshots.discard(run_id)
    publisher = (
        MarketDataPublisher(log, run_id, market_data_sink) if parallel and can_fork() else None
    )
    committing: MarketDataPublisher | None = None  # the publisher whose sink awaits the commit
    batch: list[Candle] = []
    on_candle = pipeline.on_candle
    publish = writer.publish
    with collector_paused():  # see streams.collector
        try:
            for candle in merged_candles(sources, ingest.bad_rows.append, on_progress):
                batch.append(candle)
                events = on_candle(candle)
                if events:
                    publish(events)
                if len(batch) >= BATCH:
                    if publisher is not None:
                        publisher.publish(batch)
                    else:
                        writer.market_data_inline(batch, pipeline.candles - len(batch))
                    batch = []
                    if ingest.bad_rows:
                        publish(ingest.drain())
                    writer.flush()
                    if next_snapshot is not None and pipeline.candles >= next_snapshot:
                        assert snapshots is not None
                        snapshot = Snapshot(
                            run_id=run_id,
                            partition=md_partition,
                            offset=first_candle + pipeline.candles,
                            candles=pipeline.candles,
                            code_version=code_version(),  # the code that can read it back
                            payload=pipeline.export_state(),
                        )
                        next_snapshot = pipeline.candles + snapshot_every
                        try:
                            snapshots.write(snapshot)
                        except OSError as exc:
                            # A snapshot only saves a replay time; the run goes on without.
                            logger.warning("snapshots stopped for run %s: %s", run_id, exc)
                            next_snapshot = None
            publish(ingest.drain())
            ingest.last_timestamp = pipeline.last_timestamp
            ingest.last_interval_ms = pipeline.last_interval_ms
            marker = ingest.completed(pipeline.candles)
            if publisher is not None:
                publisher.publish(batch)
                writer.set_digest(topics.MARKET_DATA, publisher.finish(trailer=[marker]))
                sink_report = publisher.sink_report
                committing, publisher = publisher, None
                # The child appended the candles; the read models need to know where they end.
                writer.written[(topics.MARKET_DATA, md_partition)] = log.end_offset(
                    topics.MARKET_DATA, md_partition
                )
            else:
                writer.market_data_inline(batch, pipeline.candles - len(batch))
                publish([marker])
                sink_report = market_data_sink.report() if market_data_sink is not None else None
            final = pipeline.finish(marker.dead_letters)
            publish(final)
            writer.flush()
            # One commit makes the whole run durable and visible; until it, nothing of it is.
            log.commit()
            # Then the candle rows, which must never be ahead of the log.
            if committing is not None:
                committing.commit_sink()
                committing = None
            elif market_data_sink is not None:
                market_data_sink.commit()
        finally:
            for unfinished in (publisher, committing):
                if unfinished is not None:
                    unfinished.abort()
    completed = final[-1]
    assert isinstance(completed, RunCompleted)
    return BacktestOutcome(run_id, completed, writer.digest(), writer.written, sink_report)


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
