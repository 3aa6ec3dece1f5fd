"""Live runs: candles published as (accelerated) time passes, and paper trading on them.

A live run is a backtest whose candles arrive on a clock. Its metadata, run id and events
are exactly those a backtest over the same sources writes (``streams.backtest``): the same
configuration and the same candles give the same log and the same read models, however
often the run was stopped and taken up again. Time only decides *when* a candle is
published, never what happens to it.

Pacing (``Pacer``): a candle is due when it closes (open time plus interval) in feed time,
which runs ``speed`` times faster than the wall clock from where the session started (the
close of the last candle already in the log, or the open of the first). ``speed`` None
publishes as fast as the consumer takes them.

Two ways to run one:

- ``run_paper`` (the embedded log, one process): feed, engine and log fused, as a backtest
  is, committing whenever it is caught up (or every ``commit_every`` seconds when behind)
  and then calling ``on_committed`` (the read models follow there).
- ``run_feed`` (any log, the feed alone): publishes the run's metadata and candles for the
  engine agents (``cdb worker`` on Kafka) to fold.

Taking a run up again: the run id is derived from configuration and sources, so the same
command finds its unfinished run in the log. ``run_paper`` restores the engine from the
run's latest snapshot, refolds the candles logged after it, and writes only the events the
log does not have yet (a kill can fall between a candle and its events); both skip the
candles already published, so none is published twice or skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from domain.events import (
    BacktestRunMetadata,
    Candle,
    Event,
    MarketDataCompleted,
    RunCompleted,
)
from domain.pipeline import PaperTradingPipeline
from domain.run_config import BacktestConfig, derived_run_id
from domain.strategies import strategy_params
from streams import topics
from streams.backtest import (
    BATCH,
    Ingest,
    RunExists,
    RunIdError,
    RunWriter,
    code_version,
    metadata_of,
)
from streams.codec import decode_view, decode_views, encode, encode_market_data
from streams.csv_source import CandleSource, merged_candles
from streams.embedded_log import EmbeddedLog
from streams.engine import OutputFilter
from streams.log_port import EventLog
from streams.snapshots import Snapshot, SnapshotStore

logger = logging.getLogger("cdb.live")

# Candles between two snapshots of a live run (and one whenever a session stops).
LIVE_SNAPSHOT_EVERY = 10_000


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


@dataclass(frozen=True)
class LiveOutcome:
    run_id: str
    candles: int  # the run's candles in the log when the session ended
    resumed_at: int  # candles that were in the log when it began (0: a new run)
    completed: RunCompleted | None  # the run's end, if its input ended in this session
    stopped: bool  # stopped on request before the input ended


class Pacer:
    """When candles are due: at their close, in feed time running ``speed`` times as fast
    as the wall clock from ``anchor``."""

    def __init__(self, speed: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if speed is not None and not speed > 0:
            raise ValueError("the speed must be positive")
        self.speed = speed
        self._clock = clock
        self._feed_ms = 0
        self._wall = 0.0

    def anchor(self, feed_ms: int) -> None:
        """Feed time ``feed_ms`` is now."""
        self._feed_ms = feed_ms
        self._wall = self._clock()

    def wait_for(self, close_ms: int) -> float:
        """Seconds until feed time reaches ``close_ms`` (0 if it has)."""
        if self.speed is None:
            return 0.0
        due = self._wall + (close_ms - self._feed_ms) / 1000.0 / self.speed
        return max(0.0, due - self._clock())

    def due_steps(self, close_ms: int, step_ms: int) -> int:
        """How many steps of ``step_ms`` past ``close_ms`` feed time is now."""
        if self.speed is None or step_ms <= 0:
            return 0
        now_ms = self._feed_ms + (self._clock() - self._wall) * 1000.0 * self.speed
        return max(0, int((now_ms - close_ms) // step_ms))


@dataclass
class _LoggedRun:
    metadata: BacktestRunMetadata
    completed: bool  # its run_completed is in the log


def _logged_runs(log: EventLog) -> dict[str, _LoggedRun]:
    """Every run in the log with its metadata, and whether it is complete."""
    runs: dict[str, _LoggedRun] = {}
    if topics.RUNS not in log.topic_names():
        return runs
    done: set[str] = set()
    for partition in range(log.partitions(topics.RUNS)):
        for record in log.read(topics.RUNS, partition):
            if b'"type":"run_metadata"' in record.value:
                event = decode_view(record.value)
                if isinstance(event, BacktestRunMetadata):
                    runs.setdefault(event.run_id, _LoggedRun(event, False))
            elif b'"type":"run_completed"' in record.value:
                done.add(record.key)
    for run_id in done:
        if run_id in runs:
            runs[run_id].completed = True
    return runs


def choose_live_run(
    log: EventLog,
    config: BacktestConfig,
    sources: Sequence[CandleSource],
    wanted: str | None,
) -> tuple[BacktestRunMetadata, bool]:
    """The run to write: an unfinished one of this configuration and these sources to take
    up (True), or a new one (False), under ``wanted`` or the derived id (with a suffix
    when a complete run has it)."""
    params = strategy_params(config.strategy_id, config.strategy_params)
    config = config.model_copy(update={"strategy_params": params.model_dump()})
    runs = _logged_runs(log)
    derived = derived_run_id(config.config_hash(), [s.sha256 for s in sources])
    if wanted is not None:
        candidates = [wanted]
    else:
        candidates = [derived, *(f"{derived}-{n}" for n in range(2, len(runs) + 3))]
    fresh = metadata_of(config, sources, candidates[0])
    for run_id in candidates:
        logged = runs.get(run_id)
        if logged is None:
            return metadata_of(config, sources, run_id), False
        if logged.completed:
            if wanted is not None:
                raise RunExists(f"run {wanted!r} is complete; choose another --run-id")
            continue
        same = logged.metadata.config_hash == fresh.config_hash and [
            s.sha256 for s in logged.metadata.data_sources
        ] == [s.sha256 for s in fresh.data_sources]
        if not same:
            raise RunIdError(
                f"run {run_id!r} in the log was started with another configuration or "
                "other data; choose another --run-id"
            )
        return logged.metadata, True
    raise RunIdError("no free run id")  # unreachable: one candidate more than runs


@dataclass
class _Progress:
    """Where a run stands in the log."""

    candles: int = 0  # its candles in market_data
    last: tuple[int, str] | None = None  # (timestamp, symbol) of the last of them
    marker: bool = False  # its market_data_completed is there


def _run_candles(
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


def _note(progress: _Progress, event: Any) -> None:
    if event.type == "market_data":
        progress.candles += 1
        progress.last = (event.timestamp, event.symbol)
    elif event.type == "market_data_completed":
        progress.marker = True


def _written_sequences(log: EventLog, run_id: str) -> dict[tuple[str, str], int]:
    """The highest sequence the log holds of each of the run's event types, outside
    market_data (the engine's outputs, the run's metadata, its dead letters)."""
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


def _skip_published(
    candles: Iterator[Candle], progress: _Progress, run_id: str
) -> Iterator[Candle]:
    """``candles`` after the ones the run has in the log, checked against its last one."""
    last: Candle | None = None
    for _ in range(progress.candles):
        last = next(candles, None)
        if last is None:
            break
    if progress.last is not None and (
        last is None or (last.timestamp, last.symbol) != progress.last
    ):
        raise RunIdError(
            f"run {run_id!r}: the candles in the log are not the first ones of this feed"
        )
    return candles


def _sleep_until_due(
    pacer: Pacer, close_ms: int, should_stop: Callable[[], bool], sleep: Callable[[float], None]
) -> bool:
    """Wait until feed time reaches ``close_ms``, waking often enough to stop promptly;
    False if stopped."""
    while (left := pacer.wait_for(close_ms)) > 0:
        if should_stop():
            return False
        sleep(min(left, 0.1))
    return not should_stop()


def _never() -> bool:
    return False


def run_paper(
    config: BacktestConfig,
    sources: Sequence[CandleSource],
    log: EmbeddedLog,
    *,
    speed: float | None,
    run_id: str | None = None,
    snapshots: SnapshotStore | None = None,
    snapshot_every: int = LIVE_SNAPSHOT_EVERY,
    on_committed: Callable[[], None] | None = None,
    observer: LiveObserver | None = None,
    should_stop: Callable[[], bool] = _never,
    commit_every: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> LiveOutcome:
    """Paper-trade ``sources`` as they are published, on the embedded log, until their
    end or ``should_stop()``; see the module's docstring."""
    log.open_for_writing()
    for topic in topics.ALL_TOPICS:
        log.create_topic(topic)
    metadata, resuming = choose_live_run(log, config, sources, run_id)
    run_id = metadata.run_id
    writer = RunWriter(log, run_id)
    pipeline = PaperTradingPipeline.from_metadata(metadata)
    md_partition = topics.partition_for(run_id, log.partitions(topics.MARKET_DATA))
    progress = _Progress()
    output = OutputFilter({})
    if resuming:
        output = OutputFilter(_written_sequences(log, run_id))
        progress = _take_up(log, snapshots, metadata, pipeline, writer, output)
        logger.info("run %s taken up at candle %d", run_id, progress.candles)
    else:
        writer.publish([metadata])
        writer.publish(pipeline.begin(metadata))
    resumed_at = progress.candles
    if observer is not None:
        observer.started(run_id, resumed_at)
    if progress.marker:  # the input ended before the stop: only the run's end is missing
        writer.publish(output.fresh(pipeline.finish(0)))
        return _close(log, writer, on_committed, run_id, pipeline, resumed_at, stopped=False)
    ingest = Ingest(run_id)
    candles = _skip_published(
        iter(merged_candles(sources, ingest.bad_rows.append)), progress, run_id
    )
    pacer = Pacer(speed, clock)
    pacer.anchor(
        progress.last[0] + pipeline.last_interval_ms
        if progress.last is not None
        else min(s.first_timestamp for s in sources)
    )
    step_ms = 0
    batch: list[Candle] = []
    events: list[Event] = []
    published: list[float] = []  # when the candles that made order results were published
    last_commit = clock()
    next_snapshot = pipeline.candles + snapshot_every

    def flush() -> None:
        nonlocal batch, events
        if batch:
            writer.market_data_inline(batch, pipeline.candles - len(batch))
        if ingest.bad_rows:
            events.extend(ingest.drain())
        writer.publish(output.fresh(events))
        writer.flush()
        if observer is not None:
            observer.folded(batch, events)
        batch, events = [], []

    def commit() -> None:
        nonlocal last_commit, next_snapshot
        flush()
        log.commit()
        last_commit = clock()
        if on_committed is not None:
            on_committed()
            if published and observer is not None:
                now = clock()
                observer.projected([now - at for at in published])
        published.clear()
        if snapshots is not None and pipeline.candles >= next_snapshot:
            _snapshot(log, snapshots, pipeline, md_partition)
            next_snapshot = pipeline.candles + snapshot_every

    stopped = False
    for candle in candles:
        close = candle.timestamp + candle.interval_ms
        step_ms = candle.interval_ms
        if pacer.wait_for(close) > 0:
            if observer is not None:
                observer.behind(0)  # caught up
            commit()  # caught up: everything so far durable and projected before idling
            if not _sleep_until_due(pacer, close, should_stop, sleep):
                stopped = True
                break
        elif should_stop():
            stopped = True
            break
        out = pipeline.on_candle(candle)
        batch.append(candle)
        if out:
            events.extend(out)
            if any(e.type == "order_result" for e in out):
                published.append(clock())
        if len(batch) >= BATCH or clock() - last_commit >= commit_every:
            if observer is not None:
                observer.behind(pacer.due_steps(close, step_ms) * len(sources))
            commit()
    if stopped:
        commit()
        if snapshots is not None:
            _snapshot(log, snapshots, pipeline, md_partition)
        return _close(log, writer, None, run_id, pipeline, resumed_at, stopped=True)
    commit()
    ingest.last_timestamp = pipeline.last_timestamp
    ingest.last_interval_ms = pipeline.last_interval_ms
    marker = ingest.completed(pipeline.candles)
    writer.publish([marker])
    writer.publish(output.fresh(pipeline.finish(marker.dead_letters)))
    return _close(log, writer, on_committed, run_id, pipeline, resumed_at, stopped=False)


def _take_up(
    log: EventLog,
    snapshots: SnapshotStore | None,
    metadata: BacktestRunMetadata,
    pipeline: PaperTradingPipeline,
    writer: RunWriter,
    output: OutputFilter,
) -> _Progress:
    """Bring ``pipeline`` to where the run's logged candles left it: from the latest
    snapshot that fits the log, else from the start; events the log lacks are published."""
    run_id = metadata.run_id
    progress = _Progress()
    snapshot = snapshots.nearest(run_id, 2**62, code_version()) if snapshots else None
    start: int | None = None
    last = _last_before(log, metadata, snapshot) if snapshot is not None else None
    if snapshot is not None and last is not None:
        pipeline.restore_state(snapshot.payload)
        progress.candles = snapshot.candles
        progress.last = (last.timestamp, last.symbol)
        start = snapshot.offset
    else:
        writer.publish(output.fresh(pipeline.begin(metadata)))
    for _offset, event in _run_candles(log, metadata, start):
        _note(progress, event)
        if event.type == "market_data":
            writer.publish(output.fresh(pipeline.on_candle(event)))
            writer.flush_if_large()
    if pipeline.candles != progress.candles:
        raise RunIdError(f"run {run_id!r}: its candles in the log are out of sequence")
    writer.flush()
    return progress


def _last_before(log: EventLog, metadata: BacktestRunMetadata, snapshot: Snapshot) -> Any:
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


def _snapshot(
    log: EventLog, snapshots: SnapshotStore, pipeline: PaperTradingPipeline, partition: int
) -> None:
    try:
        snapshots.write(
            Snapshot(
                run_id=pipeline.run_id,
                partition=partition,
                offset=log.end_offset(topics.MARKET_DATA, partition),
                candles=pipeline.candles,
                code_version=code_version(),
                payload=pipeline.export_state(),
            )
        )
    except OSError as exc:  # a snapshot only shortens the next start
        logger.warning("snapshot of run %s not written: %s", pipeline.run_id, exc)


def _close(
    log: EventLog,
    writer: RunWriter,
    on_committed: Callable[[], None] | None,
    run_id: str,
    pipeline: PaperTradingPipeline,
    resumed_at: int,
    *,
    stopped: bool,
) -> LiveOutcome:
    writer.flush()
    log.commit()
    if on_committed is not None:
        on_committed()
    completed = None
    if not stopped:
        completed = _completed_event(log, run_id)
    return LiveOutcome(run_id, pipeline.candles, resumed_at, completed, stopped)


def _completed_event(log: EventLog, run_id: str) -> RunCompleted | None:
    partition = topics.partition_for(run_id, log.partitions(topics.RUNS))
    found = None
    for record in log.read(topics.RUNS, partition):
        if record.key == run_id and b'"type":"run_completed"' in record.value:
            event = decode_view(record.value)
            if isinstance(event, RunCompleted):
                found = event
    return found


def run_feed(
    config: BacktestConfig,
    sources: Sequence[CandleSource],
    log: EventLog,
    *,
    speed: float | None,
    run_id: str | None = None,
    observer: LiveObserver | None = None,
    should_stop: Callable[[], bool] = _never,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> LiveOutcome:
    """Publish a live run's metadata and candles (and its end, when the sources end) for
    the engine agents to fold; candles already in the log are not published again."""
    log.open_for_writing()
    for topic in topics.ALL_TOPICS:
        log.create_topic(topic)
    metadata, resuming = choose_live_run(log, config, sources, run_id)
    run_id = metadata.run_id
    writer = RunWriter(log, run_id)
    progress = _Progress()
    if resuming:
        for _offset, event in _run_candles(log, metadata):
            _note(progress, event)
    else:
        writer.publish([metadata])
        writer.flush()
    resumed_at = progress.candles
    if observer is not None:
        observer.started(run_id, resumed_at)
    if progress.marker:
        log.commit()
        return LiveOutcome(run_id, progress.candles, resumed_at, None, stopped=False)
    ingest = Ingest(run_id)
    # Dead letters already written are not written again: their ids are derived.
    output = OutputFilter(_written_sequences(log, run_id) if resuming else {})
    candles = _skip_published(
        iter(merged_candles(sources, ingest.bad_rows.append)), progress, run_id
    )
    pacer = Pacer(speed, clock)
    step = min(s.interval_ms for s in sources)
    pacer.anchor(
        progress.last[0] + step
        if progress.last is not None
        else min(s.first_timestamp for s in sources)
    )
    sequence = progress.candles
    batch: list[Candle] = []
    last_flush = clock()
    stopped = False

    def flush() -> None:
        nonlocal batch, last_flush
        if batch:
            writer.market_data_records(
                [
                    (c.timestamp, encode_market_data(run_id, sequence - len(batch) + i, c))
                    for i, c in enumerate(batch)
                ]
            )
        writer.publish(output.fresh(ingest.drain()))
        writer.flush()
        log.commit()
        if observer is not None:
            observer.folded(batch, [])
        batch = []
        last_flush = clock()

    last_ts = progress.last[0] if progress.last else 0
    last_step = step
    for candle in candles:
        close = candle.timestamp + candle.interval_ms
        if pacer.wait_for(close) > 0:
            if observer is not None:
                observer.behind(0)  # caught up
            flush()
            if not _sleep_until_due(pacer, close, should_stop, sleep):
                stopped = True
                break
        elif should_stop():
            stopped = True
            break
        batch.append(candle)
        sequence += 1
        last_ts, last_step = candle.timestamp, candle.interval_ms
        if len(batch) >= BATCH or clock() - last_flush >= 0.05:
            if observer is not None:
                observer.behind(pacer.due_steps(close, candle.interval_ms) * len(sources))
            flush()
    flush()
    if not stopped:
        ingest.last_timestamp, ingest.last_interval_ms = last_ts, last_step
        marker: MarketDataCompleted = ingest.completed(sequence)
        writer.market_data_records([(marker.timestamp, encode(marker))])
        writer.flush()
        log.commit()
    return LiveOutcome(run_id, sequence, resumed_at, None, stopped)


__all__ = [
    "LIVE_SNAPSHOT_EVERY",
    "CandleSource",
    "LiveObserver",
    "LiveOutcome",
    "Pacer",
    "choose_live_run",
    "run_feed",
    "run_paper",
]
