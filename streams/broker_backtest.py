"""A backtest through a broker: the candles go to Kafka and the engine reads them back.

1. Market Data Ingestion publishes the run's metadata, its candles, its dead letters and
   the explicit end-of-input marker, and waits for the broker to acknowledge them.
2. The engine consumes the run's metadata and its ``market_data`` partition from the
   broker, from the run's first offset to its end marker, and publishes every event the
   pipeline returns.

The engine decides on what it read from the broker, not on what was sent, and the events
are the embedded log's, byte for byte (a parity test holds the two digests equal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from domain.events import BacktestRunMetadata, RunCompleted
from streams import topics
from streams.csv_source import CandleSource, merged_candles
from streams.engine import EngineProcessor
from streams.log_port import EventLog, LogError
from streams.run_driver import InlineMarketData, drive, end_input
from streams.run_writer import BacktestOutcome, Ingest, RunWriter


def publish_input(
    metadata: BacktestRunMetadata,
    sources: Sequence[CandleSource],
    log: EventLog,
    writer: RunWriter | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RunWriter:
    """Market Data Ingestion: the run's metadata, candles, dead letters and end marker."""
    run_id = metadata.run_id
    writer = writer or RunWriter(log, run_id)
    ingest = Ingest(run_id)
    writer.publish([metadata])
    writer.flush()
    market_data = InlineMarketData(writer)
    at = drive(
        merged_candles(sources, ingest.bad_rows.append, on_progress),
        writer=writer,
        ingest=ingest,
        market_data=market_data,
    )
    end_input(at, writer=writer, ingest=ingest, market_data=market_data)
    writer.flush()
    log.commit()
    return writer


def run_through_broker(
    metadata: BacktestRunMetadata,
    sources: Sequence[CandleSource],
    log: EventLog,
    on_progress: Callable[[int], None] | None = None,
) -> BacktestOutcome:
    run_id = metadata.run_id
    # 1. Market Data Ingestion.
    writer = publish_input(metadata, sources, log, on_progress=on_progress)

    # 2. The engine, reading the run back from the broker.
    engine = EngineProcessor()
    runs_at = writer.first_offsets[topics.RUNS]
    for record in log.read(topics.RUNS, runs_at[0], runs_at[1], runs_at[1] + 1):
        writer.publish(engine.on_run_metadata(record.value))
    if not engine.knows(run_id):
        raise LogError(f"run {run_id}: its metadata did not come back from the broker")
    partition, first = writer.first_offsets[topics.MARKET_DATA]
    completed = None
    for record in log.read(topics.MARKET_DATA, partition, first):
        if record.key != run_id:
            continue
        events = engine.on_market_data(record.value)
        if events:
            writer.publish(events)
            writer.flush_if_large()
        if run_id in engine.finished:
            completed = events[-1]  # the events that end a run end with its RunCompleted
            break
    if completed is None:
        raise LogError(f"run {run_id}: the end of its market data never came back")
    writer.flush()
    log.commit()
    assert isinstance(completed, RunCompleted)
    return BacktestOutcome(run_id, completed, writer.digest(), writer.written)
