"""``cdb worker``: the engine as a faust-streaming app on Kafka.

The intake is thin: it takes batches of records from ``runs`` and ``market_data``, hands
them to ``EngineProcessor`` (decode, call the pure pipeline) and sends what comes back to
each event's topic, keyed by run id. One partition holds one run's input in order. The
records arrive by one of two intakes inside the same faust app (``build_app``): batches
polled by the app's own consumer (the default) or a faust agent.

Exactly once, without Kafka transactions (which Tansu does not offer):

1. At start, the worker reads what its output topics already hold and remembers, per run
   and event type, the highest sequence written. Every event's id is derived from its run
   and sequence, and the pipeline is deterministic, so an event that would be written
   again is recognised and dropped (``OutputFilter``).
2. Still before consuming, it refolds every unfinished run from the log (its metadata and
   its market data from the first offset), publishing only what the filter lets through:
   whatever a killed worker had computed but not yet written is written now, once.
3. Then the intake consumes from its group's committed offsets; candles the refold already
   processed are recognised by their sequence and skipped.

No decision depends on when a message arrives: market data that comes before its run's
metadata waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError

from domain.events import BacktestRunMetadata, Event
from streams import topics
from streams.code_identity import code_version
from streams.codec import decode, encode
from streams.engine import EngineProcessor, OutputFilter
from streams.kafka_log import KafkaLog, send_in_batches
from streams.observability import Health, Metrics
from streams.snapshots import SNAPSHOT_EVERY, SnapshotStore

if TYPE_CHECKING:
    import faust

GROUP_ID = "claire-de-binare-engine"
# The batch intake is its own consumer group: faust's group protocol and a plain
# consumer's must not share one.
BATCH_GROUP_ID = "claire-de-binare-engine-batch"
BATCH = 4096
INTAKES = ("batch", "agent")
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
    snapshots: SnapshotStore | None = None,
) -> tuple[list[Event], int]:
    """Refold unfinished runs from the log; return the events not yet written and how
    many runs were taken up from a snapshot.

    A run with a snapshot starts from it, and its partition is read from the snapshot's
    offset (the smallest among the partition's unfinished runs; from the start if one of
    them has none): the processor passes over the candles a restored run has folded.
    """
    for run_id in finished:
        processor.mark_finished(run_id)
    partitions = kafka.partitions(topics.MARKET_DATA)
    starts = [0] * partitions
    restored: dict[int, int] = {}  # partition -> smallest snapshot offset
    plain: set[int] = set()  # partitions with an unfinished run to read from the start
    pending: list[Event] = []
    taken_up = 0
    for value in metadata:
        run = decode(value)
        assert isinstance(run, BacktestRunMetadata)
        if run.run_id in finished:
            continue
        partition = topics.partition_for(run.run_id, partitions)
        snapshot = None
        if snapshots is not None:
            snapshot = snapshots.nearest(run.run_id, 2**62, code_version())
        if snapshot is not None and snapshot.partition == partition:
            processor.restore(run, snapshot)
            restored[partition] = min(restored.get(partition, snapshot.offset), snapshot.offset)
            taken_up += 1
        else:
            plain.add(partition)
            pending.extend(output.fresh(processor.on_record(value)))
    for partition in range(partitions):
        if partition in restored and partition not in plain:
            starts[partition] = restored[partition]
        for record in kafka.read(topics.MARKET_DATA, partition, starts[partition], verify=False):
            if record.key in finished:
                continue
            at = (partition, record.offset)
            pending.extend(output.fresh(processor.on_record(record.value, at)))
    return pending, taken_up


class OutputPublisher:
    """The engine's events onto their topics, keyed by run id, as whole record batches.

    One ``send_batch`` per topic partition and call instead of one future per event; the
    call returns once the broker acknowledged everything, so offsets committed after it
    never run ahead of the output.
    """

    def __init__(self, bootstrap: str, partitions: dict[str, int], linger_ms: int = 5) -> None:
        self._bootstrap = bootstrap
        self._partitions = partitions
        self._linger_ms = linger_ms
        self._producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=False,  # event ids and the output filter make resends harmless
            linger_ms=self._linger_ms,
            max_batch_size=1 << 20,
            max_request_size=8 << 20,
        )
        await self._producer.start()

    async def publish(
        self, events: list[Event], control: Iterable[tuple[str, bytes, int | None]] = ()
    ) -> None:
        """Write ``events`` to their topics and ``control`` records (run id, value, and
        time or None for the time of sending) to ``stage_control``; return once the
        broker acknowledged all of them."""
        grouped: dict[tuple[str, int], list[tuple[bytes, bytes, int | None]]] = {}
        for event in events:
            topic = topics.TOPIC_OF_EVENT[event.type]
            partition = topics.partition_for(event.run_id, self._partitions[topic])
            record = (event.run_id.encode(), encode(event), event.timestamp)
            grouped.setdefault((topic, partition), []).append(record)
        for run_id, value, timestamp in control:
            topic = topics.STAGE_CONTROL
            partition = topics.partition_for(run_id, self._partitions[topic])
            grouped.setdefault((topic, partition), []).append((run_id.encode(), value, timestamp))
        if not grouped:
            return
        acks = []
        for (topic, partition), records in grouped.items():
            acks.extend(await send_in_batches(self._producer, topic, partition, records))
        await asyncio.gather(*acks)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class EngineState:
    """What the start-up refold leaves behind for whichever intake consumes."""

    def __init__(
        self,
        snapshots: SnapshotStore | None = None,
        every: int = SNAPSHOT_EVERY,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        self.ready = asyncio.Event()
        self.metrics = metrics
        self.health = health
        self._snapshots = snapshots
        self._every = every
        self.processor = EngineProcessor()
        self.output = OutputFilter({})
        self.publisher: OutputPublisher | None = None
        self._assigned: int | None = None

    async def start(self, bootstrap: str) -> None:
        """Create the topics, refold unfinished runs, write what a killed worker did not."""

        def work() -> tuple[list[Event], int, EngineProcessor, OutputFilter, dict[str, int]]:
            with KafkaLog(bootstrap) as kafka:
                for name in topics.ALL_TOPICS:
                    kafka.create_topic(name)
                partitions = {name: kafka.partitions(name) for name in topics.ALL_TOPICS}
                written, metadata, finished = read_state(kafka)
                processor = EngineProcessor(self._snapshots, self._every)
                output = OutputFilter(written)
                pending, restored = recover(
                    kafka, processor, output, finished, metadata, self._snapshots
                )
            return pending, restored, processor, output, partitions

        loop = asyncio.get_running_loop()
        pending, restored, self.processor, self.output, partitions = await loop.run_in_executor(
            None, work
        )
        self.publisher = OutputPublisher(bootstrap, partitions)
        await self.publisher.start()
        await self.publisher.publish(pending)
        self.ready.set()
        if self.health is not None:
            self.health.set("broker", True, bootstrap)
        log.info(
            "refolded the log: %d events written on the way, %d runs taken up from snapshots",
            len(pending),
            restored,
        )
        self._announce()

    def assigned(self, partitions: int) -> None:
        """The intake joined its consumer group and holds ``partitions``."""
        self._assigned = partitions
        if self.health is not None:
            self.health.set("consumer group", True, f"{partitions} partitions assigned")
        self._announce()

    def _announce(self) -> None:
        # Ready means both: the refold is done and the intake is a member of its group.
        if self.ready.is_set() and self._assigned is not None:
            log.info("engine ready: consuming %d partitions", self._assigned)

    async def process(self, values: Iterable[bytes]) -> None:
        """One batch of input records in, their fresh events written and acknowledged."""
        await self.process_at((value, None) for value in values)

    async def process_at(self, records: Iterable[tuple[bytes, tuple[int, int] | None]]) -> None:
        """``process`` for records with the (partition, offset) of those of market_data."""
        assert self.publisher is not None
        events: list[Event] = []
        on_record = self.processor.on_record
        candles = runs = 0
        for value, at in records:
            events.extend(on_record(value, at))
            if at is None:
                runs += 1
            else:
                candles += 1
        fresh = self.output.fresh(events)
        await self.publisher.publish(fresh)
        if self.metrics is not None:
            self.metrics.events_in(topics.MARKET_DATA, candles)
            self.metrics.events_in(topics.RUNS, runs)
            self.metrics.events_out(fresh)


class _AnnounceAssignment(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, state: EngineState) -> None:
        self._state = state

    async def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("partitions revoked: %d", len(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._state.assigned(len(assigned))


def build_app(
    bootstrap: str,
    intake: str = "batch",
    snapshots: SnapshotStore | None = None,
    snapshot_every: int = SNAPSHOT_EVERY,
    metrics: Metrics | None = None,
    health: Health | None = None,
    datadir: Path | None = None,
) -> Any:
    """The faust app with the engine; nothing connects until the worker starts.

    ``datadir`` is where faust keeps its own files (by default a folder it creates in the
    working directory): the worker gives it one in the data directory.

    ``intake`` says how input records reach the engine. ``batch`` (the default): an aiokafka
    consumer inside the app polls whole batches, and offsets are committed after their
    output is acknowledged. ``agent``: a faust agent over the same topics. Both feed the
    same ``EngineProcessor`` and write the same events; the agent pays faust's cost per
    record (an event, a stream step and two tasks per message), which caps it well below
    the batch intake on a small machine (see docs/performance.md).
    """
    import faust

    if intake not in INTAKES:
        raise ValueError(f"unknown intake {intake!r} (expected one of {', '.join(INTAKES)})")
    extra: dict[str, Any] = {} if datadir is None else {"datadir": str(datadir)}
    app = faust.App(
        GROUP_ID,
        broker=f"kafka://{bootstrap}",
        **extra,
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
    # Snapshots are taken where record offsets are at hand: by the batch intake.
    state = EngineState(snapshots if intake == "batch" else None, snapshot_every, metrics, health)

    @app.task  # type: ignore[untyped-decorator]
    async def refold_unfinished_runs() -> None:
        # Runs before any intake sees a record (see the module's guarantee 2).
        await state.start(bootstrap)

    if intake == "agent":
        _agent_intake(app, state)
    else:
        _batch_intake(app, state, bootstrap)
    return app


def _agent_intake(app: faust.App, state: EngineState) -> None:
    """The intake as a faust agent over ``runs`` and ``market_data``."""
    source = app.topic(
        topics.RUNS, topics.MARKET_DATA, value_serializer="raw", key_serializer="raw"
    )

    @app.on_partitions_assigned.connect
    async def announce(_app: Any, /, *args: Any, signal: Any, **_kwargs: Any) -> None:
        state.assigned(len(args[0]))  # faust sends the assigned partitions

    @app.agent(source)
    async def engine(stream: Any) -> None:
        await state.ready.wait()
        async for values in stream.take(BATCH, within=0.05):
            # A stop (SIGTERM) waits for the batch in flight to be written, not half of it.
            await asyncio.shield(state.process(values))


def _batch_intake(app: faust.App, state: EngineState, bootstrap: str) -> None:
    """The intake as a consumer of the app's own, polling whole batches: faust's consumer
    has nothing to subscribe to; the app's producer, tasks and services still start, and
    this is the group's member."""
    from mode import Service

    app.producer_only = True

    @app.service
    class BatchIntake(Service):
        """Polls ``runs`` and ``market_data`` in batches as the consumer group's member."""

        consumer: Any = None
        done: asyncio.Event

        async def on_start(self) -> None:
            self.done = asyncio.Event()

        async def on_stop(self) -> None:
            # The loop sees the stop between batches: the batch in flight is written
            # and its offsets committed before the consumer leaves the group.
            if self.consumer is not None:
                try:
                    await asyncio.wait_for(self.done.wait(), 60)
                finally:
                    await self.consumer.stop()
            if state.publisher is not None:
                await state.publisher.stop()

        @Service.task
        async def consume(self) -> None:
            await state.ready.wait()
            if self.should_stop:
                return
            self.consumer = await _batch_consumer(bootstrap, state)
            try:
                while not self.should_stop:
                    polled = await self.consumer.getmany(timeout_ms=200, max_records=BATCH)
                    if polled:
                        await asyncio.shield(_process_polled(state, self.consumer, polled))
            finally:
                self.done.set()


async def _batch_consumer(bootstrap: str, state: EngineState) -> Any:
    """The batch intake's consumer, started and subscribed as its group's member."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=BATCH_GROUP_ID,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=8 << 20,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        rebalance_timeout_ms=6000,
    )
    await consumer.start()
    consumer.subscribe([topics.RUNS, topics.MARKET_DATA], listener=_AnnounceAssignment(state))
    return consumer


async def _process_polled(state: EngineState, consumer: Any, polled: dict[Any, list[Any]]) -> None:
    """One poll's records through the engine, their output acknowledged, then their
    offsets committed."""
    # Run metadata first, so a run's candles polled with it need not wait.
    ordered = sorted(polled, key=lambda tp: tp.topic != topics.RUNS)
    await state.process_at(
        (m.value, (tp.partition, m.offset) if tp.topic == topics.MARKET_DATA else None)
        for tp in ordered
        for m in polled[tp]
    )
    if state.metrics is not None:
        for tp in polled:
            end = consumer.highwater(tp)
            if end is not None:
                state.metrics.lag(tp.topic, tp.partition, end - polled[tp][-1].offset - 1)
    try:
        await consumer.commit({tp: polled[tp][-1].offset + 1 for tp in polled})
    except CommitFailedError as exc:
        # The group rebalanced while the batch was processed. Its output is written; the
        # partitions' new owner reads these records again (with one worker that is this
        # one, whose engine skips them by sequence).
        log.warning("offsets not committed after a rebalance: %s", exc)


def run_worker(
    bootstrap: str,
    loglevel: str = "warn",
    intake: str = "batch",
    snapshots: SnapshotStore | None = None,
    snapshot_every: int = SNAPSHOT_EVERY,
    metrics: Metrics | None = None,
    health: Health | None = None,
    datadir: Path | None = None,
) -> int:
    """Run until SIGTERM or SIGINT; the intake finishes its batch and commits its offsets.

    faust's own files go to ``datadir``; by default beside the snapshots (``worker/`` in
    the data directory), or, without snapshots, to a temporary folder removed at exit."""
    import faust

    with contextlib.ExitStack() as cleanup:
        if datadir is None:
            if snapshots is not None:
                datadir = snapshots.root.parent / "worker"
            else:
                datadir = Path(cleanup.enter_context(tempfile.TemporaryDirectory("-cdb-worker")))
        datadir.mkdir(parents=True, exist_ok=True)  # faust makes only its last level
        app = build_app(bootstrap, intake, snapshots, snapshot_every, metrics, health, datadir)
        worker = faust.Worker(app, loglevel=loglevel, quiet=True)
        worker.execute_from_commandline()
    return 0
