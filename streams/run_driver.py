"""One run's lifecycle, whatever drives it.

Every way of running the engine goes through here: a backtest (fused, or through a
broker), a live paper run, a live feed, a replay, and the worker's recovery. What differs
between them is passed in (where candles come from, whether they are paced, where market
data is written, when the log commits), never copied:

- ``RunEngine`` is one run's engine side: the pipeline its metadata describes, its opening
  events, taking a run up again (from a snapshot, or refolded), snapshots, the end, and the
  output filter of a run taken up.
- ``drive`` is the loop over a run's candles: fold them (if there is an engine), write
  them to ``market_data`` in batches with the dead letters and the engine's events, take
  snapshots, commit, and on a live run wait for each candle to be due.

Guarantees:

1. A run's events are the pipeline's, in its order, in whichever mode it runs: each
   topic's records are the same bytes in the same order (the digests say so).
2. A run taken up again writes only what the log does not hold yet: the output filter
   passes events newer than the log's, per run and event type.
3. A snapshot is built in one place (``RunEngine.snapshot``), between two candles, with
   the market_data offset of the run's next candle; it only ever saves time.
4. The end of a run's input is explicit: its end marker after its last candle, then the
   pipeline's final events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from domain.events import BacktestRunMetadata, Candle, Event, MarketDataCompleted
from domain.pipeline import PaperTradingPipeline
from streams import topics
from streams.code_identity import code_version
from streams.codec import decode_view, decode_views
from streams.digest import TopicDigest
from streams.log_port import EventLog
from streams.market_data_publisher import MarketDataPublisher
from streams.run_writer import BATCH, Ingest, RunIdError, RunWriter
from streams.snapshots import SNAPSHOT_EVERY, Snapshot, SnapshotStore

logger = logging.getLogger("cdb.run")


class OutputFilter:
    """Lets through only events newer than what the log already holds for their stream."""

    def __init__(self, written: dict[tuple[str, str], int]) -> None:
        self._written = written

    def written(self, run_id: str, event_type: str, sequence: int) -> None:
        """The log holds ``event_type``'s event ``sequence`` of ``run_id``."""
        key = (run_id, event_type)
        if sequence > self._written.get(key, -1):
            self._written[key] = sequence

    def fresh(self, events: Iterable[Event]) -> list[Event]:
        out = []
        written = self._written
        for event in events:
            key = (event.run_id, event.type)
            if event.sequence > written.get(key, -1):
                written[key] = event.sequence
                out.append(event)
        return out


class RunEngine:
    """One run's engine: the pipeline ``metadata`` describes, and what stands between it
    and the log (see the module docstring)."""

    def __init__(
        self,
        metadata: BacktestRunMetadata,
        *,
        output: OutputFilter | None = None,
        snapshots: SnapshotStore | None = None,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> None:
        self.metadata = metadata
        self.run_id = metadata.run_id
        self.pipeline = PaperTradingPipeline.from_metadata(metadata)
        self.output = output
        self._snapshots = snapshots
        self._every = snapshot_every
        self._next_snapshot = snapshot_every

    def fresh(self, events: list[Event]) -> list[Event]:
        """``events`` less those the log already holds (all of them for a new run)."""
        return events if self.output is None else self.output.fresh(events)

    def begin(self) -> list[Event]:
        """The run's opening events."""
        return self.fresh(self.pipeline.begin(self.metadata))

    def restore(self, snapshot: Snapshot) -> None:
        """Take the run up from ``snapshot``: its candles before it count as folded."""
        self.pipeline.restore_state(snapshot.payload)
        self._next_snapshot = self.pipeline.candles + self._every

    def finish(self, dead_letters: int) -> list[Event]:
        """The run's final events, once its input has ended."""
        return self.fresh(self.pipeline.finish(dead_letters))

    def snapshots_from_here(self) -> None:
        """The next snapshot is due ``snapshot_every`` candles from the run's state now."""
        self._next_snapshot = self.pipeline.candles + self._every

    @property
    def snapshot_due(self) -> bool:
        return self._snapshots is not None and self.pipeline.candles >= self._next_snapshot

    def snapshot(self, partition: int, offset: int) -> None:
        """Save the state between two candles: ``offset`` is where the run's next candle
        is (or will be) in ``market_data/partition``. A snapshot that cannot be written
        stops the snapshots, not the run: it only ever saves time."""
        if self._snapshots is None:
            return
        pipeline = self.pipeline
        self._next_snapshot = pipeline.candles + self._every
        try:
            self._snapshots.write(
                Snapshot(
                    run_id=self.run_id,
                    partition=partition,
                    offset=offset,
                    candles=pipeline.candles,
                    code_version=code_version(),  # the code that can read it back
                    payload=pipeline.export_state(),
                )
            )
        except OSError as exc:
            logger.warning("snapshots stopped for run %s: %s", self.run_id, exc)
            self._snapshots = None


class MarketData(Protocol):
    """Where a run's candles are written, in batches, then its end marker."""

    def write(self, candles: list[Candle], first_sequence: int) -> None: ...

    def next_offset(self) -> int:
        """The market_data offset the run's next candle gets."""
        ...

    def end(self, marker: MarketDataCompleted) -> None:
        """Write the end marker after the candles; wait until everything is written."""
        ...

    def committed(self) -> None:
        """The log has committed the run: what depends on that (read-model rows) may
        follow."""
        ...

    def abort(self) -> None: ...


class InlineMarketData:
    """Candles written from this process, through the run's writer."""

    def __init__(self, writer: RunWriter, sink: Any = None) -> None:
        self._writer = writer
        self._sink = sink
        log = writer.log
        self._partition = topics.partition_for(writer.run_id, log.partitions(topics.MARKET_DATA))
        self.sink_report: Any = None

    @property
    def partition(self) -> int:
        return self._partition

    def write(self, candles: list[Candle], first_sequence: int) -> None:
        self._writer.market_data_inline(candles, first_sequence)

    def next_offset(self) -> int:
        return self._writer.log.end_offset(topics.MARKET_DATA, self._partition)

    def end(self, marker: MarketDataCompleted) -> None:
        self._writer.publish([marker])
        # Every candle is handed over: the sink writes what it still holds (uncommitted).
        self.sink_report = self._sink.report() if self._sink is not None else None

    def committed(self) -> None:
        if self._sink is not None:
            self._sink.commit()

    def abort(self) -> None:
        """Nothing runs beside this process."""


class ForkedMarketData:
    """Candles encoded and appended by a helper process, on the other core, in this
    run's partition from ``first_offset`` on (the run holds the log's writer lock, so its
    candles follow each other there)."""

    def __init__(self, publisher: MarketDataPublisher, partition: int, first_offset: int) -> None:
        self._publisher = publisher
        self.partition = partition
        self._next = first_offset
        self.sink_report: Any = None
        self.digest: TopicDigest | None = None

    def write(self, candles: list[Candle], first_sequence: int) -> None:
        self._publisher.publish(candles)
        self._next += len(candles)

    def next_offset(self) -> int:
        return self._next

    def end(self, marker: MarketDataCompleted) -> None:
        self.digest = self._publisher.finish(trailer=[marker])
        self.sink_report = self._publisher.sink_report

    def committed(self) -> None:
        self._publisher.commit_sink()

    def abort(self) -> None:
        self._publisher.abort()


class LiveObserver(Protocol):
    """Told what a live run does, as it does it (metrics, progress lines)."""

    def started(self, run_id: str, resumed_at: int) -> None:
        """The session's run, and how many of its candles the log already had."""

    def folded(self, candles: Sequence[Candle], events: Sequence[Event]) -> None:
        """Candles published (and, in a paper run, folded) and the events they caused."""

    def projected(self, latencies: Sequence[float]) -> None:
        """Seconds from a candle's publication to its order results in the read models."""

    def behind(self, candles: int) -> None:
        """Candles already due that are not published yet (the feed outruns the engine)."""


class Pacing(Protocol):
    def wait_for(self, close_ms: int) -> float: ...

    def due_steps(self, close_ms: int, step_ms: int) -> int: ...


@dataclass
class Live:
    """How a live run is paced and stopped: each candle is due at its close, on a clock,
    and everything so far is committed whenever the run has caught up, and at least every
    ``commit_every`` seconds when it is behind."""

    pacer: Pacing
    should_stop: Callable[[], bool]
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    sources: int  # candles per step of the feed (one per symbol)
    commit_every: float = 0.05
    observer: LiveObserver | None = None
    on_committed: Callable[[], None] | None = None


@dataclass
class Drive:
    """Where a drive ended: how many candles the run has, its last, whether it stopped."""

    sequence: int  # the sequence of the run's next candle: its count so far
    last: tuple[int, int]  # (timestamp, interval) of the run's last candle (0, 0: none)
    stopped: bool = False


def drive(
    candles: Iterable[Candle],
    *,
    writer: RunWriter,
    ingest: Ingest,
    market_data: MarketData,
    engine: RunEngine | None = None,
    output: OutputFilter | None = None,
    start: Drive | None = None,
    live: Live | None = None,
    commit_each_flush: bool = False,
) -> Drive:
    """Run ``candles`` through the run: fold each (with an ``engine``), and every batch
    write the candles, the dead letters and the engine's events (through ``output``, the
    filter of a run taken up), take a snapshot when one is due, and with
    ``commit_each_flush`` commit the log. ``live`` paces the candles and may stop early.
    The caller writes the run's end (``end_input``) and commits the last of it."""
    driving = _Driving(writer, ingest, market_data, engine, output, live, commit_each_flush)
    at = start or Drive(0, (0, 0))
    driving.sequence = at.sequence
    folded = driving.unpaced(candles) if live is None else driving.paced(candles, live)
    if driving.batch or ingest.bad_rows or driving.events:
        # What is left: a backtest takes no snapshot here (its snapshots fall on whole
        # batches); a live run, which commits as it goes, does.
        driving.flush(snapshot=live is not None)
    last = (folded.timestamp, folded.interval_ms) if folded is not None else at.last
    return Drive(driving.sequence, last, driving.stopped)


class _Driving:
    """One drive between its batches: the candles and events gathered since the last
    flush, and what a flush writes them with."""

    def __init__(
        self,
        writer: RunWriter,
        ingest: Ingest,
        market_data: MarketData,
        engine: RunEngine | None,
        output: OutputFilter | None,
        live: Live | None,
        commit_each_flush: bool,
    ) -> None:
        self.writer, self.ingest, self.market_data = writer, ingest, market_data
        self.engine, self.output, self.live = engine, output, live
        self.commit_each_flush = commit_each_flush
        self.observer = live.observer if live is not None else None
        self.sequence = 0  # the sequence of the run's next candle
        self.batch: list[Candle] = []
        self.events: list[Event] = []
        self.published: list[float] = []  # when candles that made order results came
        self.stopped = False
        self.last_flush = live.clock() if live is not None else 0.0

    def unpaced(self, candles: Iterable[Candle]) -> Candle | None:
        """The hot loop of a backtest: every candle as fast as it comes."""
        batch, events = self.batch, self.events
        on_candle = self.engine.pipeline.on_candle if self.engine is not None else None
        folded = None
        for folded in candles:
            batch.append(folded)
            if on_candle is not None:
                out = on_candle(folded)
                if out:
                    events.extend(out)
            if len(batch) >= BATCH:
                self.sequence += len(batch)
                self.flush()
                batch, events = self.batch, self.events
        self.sequence += len(batch)
        return folded

    def paced(self, candles: Iterable[Candle], live: Live) -> Candle | None:
        """A live run's loop: each candle when it is due, commits as it goes, a stop."""
        on_candle = self.engine.pipeline.on_candle if self.engine is not None else None
        observer, clock = self.observer, live.clock
        folded = None
        for candle in candles:
            close = candle.timestamp + candle.interval_ms
            if live.pacer.wait_for(close) > 0:
                if observer is not None:
                    observer.behind(0)  # caught up
                self.flush()  # caught up: all so far durable and projected before idling
                if not _sleep_until_due(live, close):
                    self.stopped = True
                    break
            elif live.should_stop():
                self.stopped = True
                break
            self.batch.append(candle)
            self.sequence += 1
            folded = candle
            if on_candle is not None:
                out = on_candle(candle)
                if out:
                    self.events.extend(out)
                    if observer is not None and any(e.type == "order_result" for e in out):
                        self.published.append(clock())
            if len(self.batch) >= BATCH or clock() - self.last_flush >= live.commit_every:
                if observer is not None:
                    observer.behind(live.pacer.due_steps(close, candle.interval_ms) * live.sources)
                self.flush()
        return folded

    def flush(self, *, snapshot: bool = True) -> None:
        """Write what was gathered; snapshot if due; commit if each flush does."""
        batch, events, engine = self.batch, self.events, self.engine
        if batch:
            self.market_data.write(batch, self.sequence - len(batch))
        if self.ingest.bad_rows:
            events.extend(self.ingest.drain())
        self.writer.publish(self.output.fresh(events) if self.output is not None else events)
        self.writer.flush()
        if self.observer is not None:
            self.observer.folded(batch, events if engine is not None else [])
        if snapshot and engine is not None and engine.snapshot_due:
            engine.snapshot(market_data_partition(self.writer), self.market_data.next_offset())
        if self.commit_each_flush:
            self.writer.log.commit()
            self._committed()
        self.batch, self.events = [], []
        if self.live is not None:
            self.last_flush = self.live.clock()

    def _committed(self) -> None:
        """After a live run's commit: the read models follow; say how long it took."""
        live, observer = self.live, self.observer
        if live is not None and live.on_committed is not None:
            live.on_committed()
            if self.published and observer is not None:
                now = live.clock()
                observer.projected([now - moment for moment in self.published])
        self.published.clear()


def end_input(
    at: Drive, *, writer: RunWriter, ingest: Ingest, market_data: MarketData
) -> MarketDataCompleted:
    """The run's input has ended: its remaining dead letters, then its end marker after
    its last candle."""
    writer.publish(ingest.drain())
    ingest.last_timestamp, ingest.last_interval_ms = at.last
    marker = ingest.completed(at.sequence)
    market_data.end(marker)
    return marker


def market_data_partition(writer: RunWriter) -> int:
    return topics.partition_for(writer.run_id, writer.log.partitions(topics.MARKET_DATA))


def _sleep_until_due(live: Live, close_ms: int) -> bool:
    """Wait until feed time reaches ``close_ms``, waking often enough to stop promptly;
    False if stopped."""
    while (left := live.pacer.wait_for(close_ms)) > 0:
        if live.should_stop():
            return False
        live.sleep(min(left, 0.1))
    return not live.should_stop()


# -- taking a run up again ----------------------------------------------------------------


@dataclass
class Logged:
    """Where a run stands in the log."""

    candles: int = 0  # its candles in market_data
    last: tuple[int, str] | None = None  # (timestamp, symbol) of the last of them
    marker: bool = False  # its market_data_completed is there

    def note(self, event: Any) -> None:
        if event.type == "market_data":
            self.candles += 1
            self.last = (event.timestamp, event.symbol)
        elif event.type == "market_data_completed":
            self.marker = True


def logged_candles(
    log: EventLog, metadata: BacktestRunMetadata, from_offset: int | None = None
) -> Iterator[tuple[int, Any]]:
    """(offset, event) of the run's market_data records, from ``from_offset`` (default:
    where records of the run's first candle's time begin)."""
    run_id = metadata.run_id
    partition = topics.partition_for(run_id, log.partitions(topics.MARKET_DATA))
    if from_offset is None:
        from_offset = log.offset_for_time(topics.MARKET_DATA, partition, metadata.timestamp)
    for key, first, values in log.read_values(topics.MARKET_DATA, partition, from_offset):
        if key != run_id:
            continue
        events = decode_views(values) or [decode_view(value) for value in values]
        yield from enumerate(events, first)


def written_sequences(log: EventLog, run_id: str) -> dict[tuple[str, str], int]:
    """The highest sequence the log holds of each of the run's event types, outside
    market_data (the engine's outputs, the run's metadata, its dead letters): what an
    output filter of a run taken up starts from."""
    written: dict[tuple[str, str], int] = {}
    names = log.topic_names()
    for topic in topics.ALL_TOPICS:
        if topic == topics.MARKET_DATA or topic not in names:
            continue
        partition = topics.partition_for(run_id, log.partitions(topic))
        for record in log.read(topic, partition):
            if record.key != run_id:
                continue
            event = decode_view(record.value)
            key = (run_id, event.type)
            if event.sequence > written.get(key, -1):
                written[key] = event.sequence
    return written


def skip_logged(candles: Iterator[Candle], logged: Logged, run_id: str) -> Iterator[Candle]:
    """``candles`` after the ones the run has in the log, checked against its last one."""
    last: Candle | None = None
    for _ in range(logged.candles):
        last = next(candles, None)
        if last is None:
            break
    if logged.last is not None and (last is None or (last.timestamp, last.symbol) != logged.last):
        raise RunIdError(
            f"run {run_id!r}: the candles in the log are not the first ones of this feed"
        )
    return candles


def take_up(
    engine: RunEngine, log: EventLog, snapshots: SnapshotStore | None, writer: RunWriter
) -> Logged:
    """Bring ``engine`` to where the run's logged candles left it: from the latest
    snapshot that fits the log, else from the start; the events the log lacks (a kill can
    fall between a candle and its events) are published."""
    metadata, run_id = engine.metadata, engine.run_id
    logged = Logged()
    snapshot = snapshots.nearest(run_id, 2**62, code_version()) if snapshots else None
    start: int | None = None
    last = snapshot_fits(log, metadata, snapshot) if snapshot is not None else None
    if snapshot is not None and last is not None:
        engine.restore(snapshot)
        logged.candles = snapshot.candles
        logged.last = (last.timestamp, last.symbol)
        start = snapshot.offset
    else:
        writer.publish(engine.begin())
    on_candle = engine.pipeline.on_candle
    for _offset, event in logged_candles(log, metadata, start):
        logged.note(event)
        if event.type == "market_data":
            writer.publish(engine.fresh(on_candle(event)))
            writer.flush_if_large()
    if engine.pipeline.candles != logged.candles:
        raise RunIdError(f"run {run_id!r}: its candles in the log are out of sequence")
    writer.flush()
    engine.snapshots_from_here()
    return logged


def snapshot_fits(log: EventLog, metadata: BacktestRunMetadata, snapshot: Snapshot) -> Any:
    """The run's candle ``candles - 1``, if it is where the snapshot says it was taken
    (just before its offset); else None: the snapshot does not fit this log."""
    partition = topics.partition_for(metadata.run_id, log.partitions(topics.MARKET_DATA))
    if snapshot.partition != partition or snapshot.offset < 1:
        return None
    for record in log.read(topics.MARKET_DATA, partition, snapshot.offset - 1, snapshot.offset):
        event = decode_view(record.value)
        if (
            record.key == metadata.run_id
            and event.type == "market_data"
            and event.sequence == snapshot.candles - 1
        ):
            return event
    return None
