"""The backtest runner: candles from files through the pipeline into the log.

This is the Market Data Ingestion stage and the transport around the pure pipeline: it
publishes every candle to ``market_data`` and every event the pipeline returns to its
topic, keyed by the run id so one run stays in one partition, in order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from domain.events import (
    BacktestRunMetadata,
    DataSource,
    RunCompleted,
)
from domain.run_config import BacktestConfig, derived_run_id, run_metadata_event
from domain.strategies import strategy_params
from runtime.collector import collector_paused
from streams import topics
from streams.broker_backtest import run_through_broker
from streams.code_identity import code_version as deciding_code_version
from streams.csv_source import CandleSource, merged_candles
from streams.log_port import EventLog, SharedWriting
from streams.market_data_publisher import MarketDataPublisher, MarketDataSink, can_fork
from streams.run_driver import (
    ForkedMarketData,
    InlineMarketData,
    RunEngine,
    drive,
    end_input,
    market_data_partition,
)
from streams.run_writer import BATCH, BacktestOutcome, Ingest, RunExists, RunIdError, RunWriter
from streams.snapshots import SNAPSHOT_EVERY, SnapshotStore

__all__ = [
    "BATCH",
    "BacktestOutcome",
    "Ingest",
    "RunExists",
    "RunIdError",
    "RunWriter",
    "choose_run_id",
    "code_version",
    "existing_run_ids",
    "metadata_of",
    "prepare_run",
    "run_backtest",
    "run_fused",
]

logger = logging.getLogger("cdb.backtest")


_RUN_ID = re.compile(r"[A-Za-z0-9._:\-]{1,120}")


def code_version() -> str:
    """The version of the code that decides (see ``streams.code_identity``)."""
    return deciding_code_version()


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

    On a local log the stages run fused, candle by candle, in this process (with
    ``parallel``, and where the log and the platform allow, market data is written by a
    second process). On a broker's log the candles go through the broker: see
    ``streams.broker_backtest``. The events written are identical either way.
    ``market_data_sink`` (local logs only) is handed each batch of candles as appended.
    With ``snapshots`` the engine's state is saved every ``snapshot_every`` candles (at
    the next batch boundary), for replays and restarts.
    """
    metadata = prepare_run(config, sources, log, run_id)
    if log.brokered:
        return run_through_broker(metadata, sources, log, on_progress)
    return run_fused(
        metadata,
        sources,
        log,
        on_progress,
        parallel=parallel,
        market_data_sink=market_data_sink,
        snapshots=snapshots,
        snapshot_every=snapshot_every,
    )


def run_fused(
    metadata: BacktestRunMetadata,
    sources: Sequence[CandleSource],
    log: EventLog,
    on_progress: Callable[[int], None] | None = None,
    *,
    parallel: bool = True,
    market_data_sink: MarketDataSink | None = None,
    snapshots: SnapshotStore | None = None,
    snapshot_every: int = SNAPSHOT_EVERY,
) -> BacktestOutcome:
    """The stages fused, candle by candle; one commit at the end makes the run durable
    and visible, and only then are the candle rows the sink wrote committed."""
    run_id = metadata.run_id
    if snapshots is not None:
        snapshots.discard(run_id)  # of an attempt that never committed (see discard)
    engine = RunEngine(metadata, snapshots=snapshots, snapshot_every=snapshot_every)
    ingest = Ingest(run_id)
    writer = RunWriter(log, run_id, market_data_sink)
    writer.publish([metadata])
    writer.publish(engine.begin())
    market_data = _market_data(writer, market_data_sink, parallel)
    with collector_paused():  # see runtime.collector
        try:
            at = drive(
                merged_candles(sources, ingest.bad_rows.append, on_progress),
                writer=writer,
                ingest=ingest,
                market_data=market_data,
                engine=engine,
            )
            marker = end_input(at, writer=writer, ingest=ingest, market_data=market_data)
            if isinstance(market_data, ForkedMarketData):
                assert market_data.digest is not None
                writer.set_digest(topics.MARKET_DATA, market_data.digest)
                # The child appended the candles; the read models need to know where.
                writer.written[(topics.MARKET_DATA, market_data.partition)] = log.end_offset(
                    topics.MARKET_DATA, market_data.partition
                )
            final = engine.finish(marker.dead_letters)
            writer.publish(final)
            writer.flush()
            # One commit makes the whole run durable and visible; until it, nothing of it is.
            log.commit()
            # Then the candle rows, which must never be ahead of the log.
            market_data.committed()
        except BaseException:
            market_data.abort()
            raise
    completed = final[-1]
    assert isinstance(completed, RunCompleted)
    return BacktestOutcome(
        run_id, completed, writer.digest(), writer.written, market_data.sink_report
    )


def _market_data(
    writer: RunWriter, sink: MarketDataSink | None, parallel: bool
) -> InlineMarketData | ForkedMarketData:
    """Candles written by a helper process where the log and the platform allow it (a
    second core encodes and appends them), else from this one."""
    log = writer.log
    if parallel and can_fork() and isinstance(log, SharedWriting):
        partition = market_data_partition(writer)
        first = log.end_offset(topics.MARKET_DATA, partition)  # the run holds the lock
        return ForkedMarketData(MarketDataPublisher(log, writer.run_id, sink), partition, first)
    return InlineMarketData(writer, sink)
