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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from domain.events import BacktestRunMetadata, RunCompleted
from domain.pipeline import PaperTradingPipeline
from domain.run_config import BacktestConfig, derived_run_id
from domain.strategies import strategy_params
from streams import topics
from streams.backtest import metadata_of
from streams.codec import decode_view
from streams.csv_source import CandleSource, merged_candles
from streams.engine import OutputFilter
from streams.log_port import EventLog
from streams.run_driver import (
    Drive,
    InlineMarketData,
    Live,
    LiveObserver,
    Logged,
    RunEngine,
    drive,
    end_input,
    logged_candles,
    skip_logged,
    take_up,
    written_sequences,
)
from streams.run_writer import Ingest, RunExists, RunIdError, RunWriter
from streams.snapshots import SnapshotStore

logger = logging.getLogger("cdb.live")

# Candles between two snapshots of a live run (and one whenever a session stops).
LIVE_SNAPSHOT_EVERY = 10_000


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


def _never() -> bool:
    return False


def run_paper(
    config: BacktestConfig,
    sources: Sequence[CandleSource],
    log: EventLog,
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
    """Paper-trade ``sources`` as they are published, until their end or
    ``should_stop()``; see the module's docstring."""
    log.open_for_writing()
    for topic in topics.ALL_TOPICS:
        log.create_topic(topic)
    metadata, resuming = choose_live_run(log, config, sources, run_id)
    run_id = metadata.run_id
    writer = RunWriter(log, run_id)
    engine = RunEngine(
        metadata,
        output=OutputFilter(written_sequences(log, run_id) if resuming else {}),
        snapshots=snapshots,
        snapshot_every=snapshot_every,
    )
    logged = Logged()
    if resuming:
        logged = take_up(engine, log, snapshots, writer)
        logger.info("run %s taken up at candle %d", run_id, logged.candles)
    else:
        writer.publish([metadata])
        writer.publish(engine.begin())
        engine.snapshots_from_here()
    pipeline = engine.pipeline
    resumed_at = logged.candles
    if observer is not None:
        observer.started(run_id, resumed_at)
    if logged.marker:  # the input ended before the stop: only the run's end is missing
        writer.publish(engine.finish(0))
        return _close(log, writer, on_committed, run_id, pipeline, resumed_at, stopped=False)
    ingest = Ingest(run_id)
    candles = skip_logged(iter(merged_candles(sources, ingest.bad_rows.append)), logged, run_id)
    pacer = Pacer(speed, clock)
    pacer.anchor(
        logged.last[0] + pipeline.last_interval_ms
        if logged.last is not None
        else min(s.first_timestamp for s in sources)
    )
    market_data = InlineMarketData(writer)
    at = drive(
        candles,
        writer=writer,
        ingest=ingest,
        market_data=market_data,
        engine=engine,
        output=engine.output,
        start=Drive(pipeline.candles, (pipeline.last_timestamp, pipeline.last_interval_ms)),
        live=Live(
            pacer, should_stop, sleep, clock, len(sources), commit_every, observer, on_committed
        ),
        commit_each_flush=True,
    )
    if at.stopped:
        log.commit()
        engine.snapshot(market_data.partition, market_data.next_offset())  # for the next start
        return _close(log, writer, None, run_id, pipeline, resumed_at, stopped=True)
    marker = end_input(at, writer=writer, ingest=ingest, market_data=market_data)
    writer.publish(engine.finish(marker.dead_letters))
    return _close(log, writer, on_committed, run_id, pipeline, resumed_at, stopped=False)


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
    logged = Logged()
    if resuming:
        for _offset, event in logged_candles(log, metadata):
            logged.note(event)
    else:
        writer.publish([metadata])
        writer.flush()
    resumed_at = logged.candles
    if observer is not None:
        observer.started(run_id, resumed_at)
    if logged.marker:
        log.commit()
        return LiveOutcome(run_id, logged.candles, resumed_at, None, stopped=False)
    ingest = Ingest(run_id)
    # Dead letters already written are not written again: their ids are derived.
    output = OutputFilter(written_sequences(log, run_id) if resuming else {})
    candles = skip_logged(iter(merged_candles(sources, ingest.bad_rows.append)), logged, run_id)
    pacer = Pacer(speed, clock)
    step = min(s.interval_ms for s in sources)
    pacer.anchor(
        logged.last[0] + step
        if logged.last is not None
        else min(s.first_timestamp for s in sources)
    )
    market_data = InlineMarketData(writer)
    at = drive(
        candles,
        writer=writer,
        ingest=ingest,
        market_data=market_data,
        output=output,
        start=Drive(logged.candles, (logged.last[0] if logged.last else 0, step)),
        live=Live(pacer, should_stop, sleep, clock, len(sources), observer=observer),
        commit_each_flush=True,
    )
    if at.stopped:
        log.commit()
    else:
        end_input(at, writer=writer, ingest=ingest, market_data=market_data)
        writer.flush()
        log.commit()
    return LiveOutcome(run_id, at.sequence, resumed_at, None, at.stopped)


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
