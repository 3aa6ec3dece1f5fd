"""``cdb worker``: the engine as a faust-streaming agent on Kafka.

The agent is thin: it takes batches of records from ``runs`` and ``market_data``, hands
them to ``EngineProcessor`` (decode, call the pure pipeline) and sends what comes back to
each event's topic, keyed by run id. One partition holds one run's input in order.

Exactly once, without Kafka transactions (which Tansu does not offer):

1. At start, the worker reads what its output topics already hold and remembers, per run
   and event type, the highest sequence written. Every event's id is derived from its run
   and sequence, and the pipeline is deterministic, so an event that would be written
   again is recognised and dropped (``OutputFilter``).
2. Still before consuming, it refolds every unfinished run from the log (its metadata and
   its market data from the first offset), publishing only what the filter lets through:
   whatever a killed worker had computed but not yet written is written now, once.
3. Then the agent consumes from the group's committed offsets; candles the refold already
   processed are recognised by their sequence and skipped.

No decision depends on when a message arrives: market data that comes before its run's
metadata waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import orjson

from domain.events import Event
from streams import topics
from streams.codec import encode
from streams.engine import EngineProcessor
from streams.kafka_log import KafkaLog

GROUP_ID = "claire-de-binare-engine"
BATCH = 2048
OUTPUT_TOPICS = (
    topics.SIGNALS,
    topics.RISK_DECISIONS,
    topics.ORDERS,
    topics.ORDER_RESULTS,
    topics.ALERTS,
    topics.PORTFOLIO,
    topics.RUNS,
)

log = logging.getLogger("cdb.worker")


class OutputFilter:
    """Lets through only events newer than what the log already holds for their stream."""

    def __init__(self, written: dict[tuple[str, str], int]) -> None:
        self._written = written

    def fresh(self, events: Iterable[Event]) -> list[Event]:
        out = []
        written = self._written
        for event in events:
            key = (event.run_id, event.type)
            if event.sequence > written.get(key, -1):
                written[key] = event.sequence
                out.append(event)
        return out


def read_state(kafka: KafkaLog) -> tuple[dict[tuple[str, str], int], list[bytes], set[str]]:
    """What the log says: sequences written per (run, type), run metadata, finished runs."""
    written: dict[tuple[str, str], int] = {}
    metadata: list[bytes] = []
    finished: set[str] = set()
    for topic in OUTPUT_TOPICS:
        for partition in range(kafka.partitions(topic)):
            for record in kafka.read(topic, partition, verify=False):
                head = orjson.loads(record.value)
                kind = head.get("type")
                if kind == "run_metadata":
                    metadata.append(record.value)
                    continue
                if kind == "run_completed":
                    finished.add(str(head["run_id"]))
                key = (str(head.get("run_id")), str(kind))
                sequence = int(head.get("sequence", -1))
                if sequence > written.get(key, -1):
                    written[key] = sequence
    return written, metadata, finished


def recover(
    kafka: KafkaLog,
    processor: EngineProcessor,
    output: OutputFilter,
    finished: set[str],
    metadata: list[bytes],
) -> list[Event]:
    """Refold unfinished runs from the log; return the events not yet written."""
    for run_id in finished:
        processor.mark_finished(run_id)
    pending: list[Event] = []
    for value in metadata:
        pending.extend(output.fresh(processor.on_record(value)))
    for partition in range(kafka.partitions(topics.MARKET_DATA)):
        for record in kafka.read(topics.MARKET_DATA, partition, verify=False):
            if record.key in finished:
                continue
            pending.extend(output.fresh(processor.on_record(record.value)))
    return pending


def build_app(bootstrap: str) -> object:
    """The faust app with the engine agent; nothing connects until the worker starts."""
    import faust

    app = faust.App(
        GROUP_ID,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,  # the application creates its topics (streams.kafka_log)
        topic_disable_leader=True,
        broker_commit_interval=1.0,
        # A killed worker's partitions go to its successor within seconds, not minutes.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=6.0,
    )
    source = app.topic(
        topics.RUNS, topics.MARKET_DATA, value_serializer="raw", key_serializer="raw"
    )
    sinks = {
        name: app.topic(name, value_serializer="raw", key_serializer="raw")
        for name in OUTPUT_TOPICS
    }
    state: dict[str, object] = {}

    async def publish(events: list[Event]) -> None:
        partitions: dict[str, int] = state["partitions"]  # type: ignore[assignment]
        for event in events:
            topic = topics.TOPIC_OF_EVENT[event.type]
            await sinks[topic].send(
                key=event.run_id.encode(),
                value=encode(event),
                partition=topics.partition_for(event.run_id, partitions[topic]),
                timestamp=event.timestamp / 1000.0,
            )
        await app.producer.flush()

    @app.task  # type: ignore[untyped-decorator]
    async def refold_unfinished_runs() -> None:
        # Runs before the agent sees a record (see the module's guarantee 2).
        def work() -> tuple[list[Event], EngineProcessor, OutputFilter, dict[str, int]]:
            with KafkaLog(bootstrap) as kafka:
                for name in topics.ALL_TOPICS:
                    kafka.create_topic(name)
                partitions = {name: kafka.partitions(name) for name in topics.ALL_TOPICS}
                written, metadata, finished = read_state(kafka)
                processor = EngineProcessor()
                output = OutputFilter(written)
                pending = recover(kafka, processor, output, finished, metadata)
            return pending, processor, output, partitions

        pending, processor, output, partitions = await asyncio.get_running_loop().run_in_executor(
            None, work
        )
        state.update(processor=processor, output=output, partitions=partitions)
        await publish(pending)
        state["ready"].set()  # type: ignore[attr-defined]
        log.info("engine ready: refolded the log, %d events written on the way", len(pending))

    state["ready"] = asyncio.Event()

    @app.agent(source)
    async def engine(stream: object) -> None:
        await state["ready"].wait()  # type: ignore[attr-defined]
        processor: EngineProcessor = state["processor"]  # type: ignore[assignment]
        output: OutputFilter = state["output"]  # type: ignore[assignment]
        async for values in stream.take(BATCH, within=0.05):  # type: ignore[attr-defined]
            events: list[Event] = []
            for value in values:
                events.extend(processor.on_record(value))
            # A stop (SIGTERM) waits for the batch in flight to be written, not half of it.
            await asyncio.shield(publish(output.fresh(events)))

    return app


def run_worker(bootstrap: str, loglevel: str = "warn") -> int:
    """Run until SIGTERM or SIGINT; faust stops the agent and commits its offsets."""
    import faust

    app = build_app(bootstrap)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)  # type: ignore[arg-type]
    worker.execute_from_commandline()
    return 0
