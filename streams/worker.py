"""``cdb worker``: the engine as a faust-streaming app on Kafka.

The intake is thin: it takes batches of records from ``runs`` and ``market_data``, hands
them to ``EngineProcessor`` (decode, call the pure pipeline) and sends what comes back to
each event's topic, keyed by run id. One partition holds one run's input in order. The
records arrive by one of two intakes inside the same faust app (``build_app``): batches
polled by the app's own consumer (the default) or a faust agent.

Workers in one consumer group split the partitions: the group assigns a worker the same
partition numbers of ``runs`` and ``market_data``, and the worker holds the runs whose
market data is in those partitions (``EngineState``). Exactly once, without Kafka
transactions (which Tansu does not offer), at each assignment:

1. The worker reads what its output topics already hold of the runs it now holds and
   remembers, per run and event type, the highest sequence written. Every event's id is
   derived from its run and sequence, and the pipeline is deterministic, so an event that
   would be written again is recognised and dropped (``OutputFilter``).
2. It refolds those runs that are unfinished from the log (their metadata and their market
   data from the first offset, or from a snapshot), publishing only what the filter lets
   through: whatever a killed or revoked predecessor had computed but not yet written is
   written now, once.
3. Then the intake consumes from its group's committed offsets; candles the refold already
   processed are recognised by their sequence and skipped, and records of partitions the
   worker no longer holds are left to their new owner.

A revoked worker finishes the batch in flight (its output acknowledged, its offsets
committed) before the group moves on, so its successor's refold sees that output.

No decision depends on when a message arrives: market data that comes before its run's
metadata waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError

from domain.events import BacktestRunMetadata, Event
from streams import topics
from streams.code_identity import code_version
from streams.codec import decode, encode
from streams.engine import EngineProcessor, OutputFilter
from streams.faust_batches import acknowledge, batches
from streams.kafka_log import KafkaLog, send_in_batches
from streams.log_port import LogError, Record
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


class Revoked(Exception):
    """The partitions a refold was for were revoked before it ended: it writes nothing."""


def create_topics(kafka: KafkaLog) -> dict[str, int]:
    """Every topic the engine uses, and its partitions. ``runs`` and ``market_data`` need
    the same count: a worker takes a run's metadata and its candles from the partitions of
    the same number, which the group assigns to it together."""
    for name in topics.ALL_TOPICS:
        kafka.create_topic(name)
    partitions = {name: kafka.partitions(name) for name in topics.ALL_TOPICS}
    runs, market_data = partitions[topics.RUNS], partitions[topics.MARKET_DATA]
    if runs != market_data:
        raise LogError(
            f"topic {topics.RUNS!r} has {runs} partitions and {topics.MARKET_DATA!r} "
            f"{market_data}: the worker needs the same count on both, so that a run's "
            "metadata and candles share a partition number (add partitions to the smaller)"
        )
    return partitions


def _read(
    kafka: KafkaLog,
    topic: str,
    partition: int,
    start: int = 0,
    revoked: Callable[[], bool] | None = None,
) -> Iterator[Record]:
    """``kafka.read`` that stops with ``Revoked`` as soon as ``revoked()`` says so."""
    for record in kafka.read(topic, partition, start, verify=False):
        if revoked is not None and revoked():
            raise Revoked
        yield record


def read_state(
    kafka: KafkaLog, held: Collection[int], revoked: Callable[[], bool] | None = None
) -> tuple[dict[tuple[str, str], int], list[bytes], set[str]]:
    """What the log says of the runs whose market_data partition is in ``held``: sequences
    written per (run, type), run metadata, finished runs."""
    inputs = kafka.partitions(topics.MARKET_DATA)
    mine: dict[str, bool] = {}  # run id -> its market_data partition is held

    def ours(run_id: str) -> bool:
        known = mine.get(run_id)
        if known is None:
            known = mine[run_id] = topics.partition_for(run_id, inputs) in held
        return known

    written: dict[tuple[str, str], int] = {}
    metadata: list[bytes] = []
    finished: set[str] = set()
    for topic in OUTPUT_TOPICS:
        count = kafka.partitions(topic)
        # A run's events go to the partition of its number where the counts agree.
        places = sorted(p for p in held if p < count) if count == inputs else range(count)
        for partition in places:
            for record in _read(kafka, topic, partition, revoked=revoked):
                head = orjson.loads(record.value)
                run_id = str(head.get("run_id"))
                if not ours(run_id):
                    continue
                kind = head.get("type")
                if kind == "run_metadata":
                    metadata.append(record.value)
                    continue
                if kind == "run_completed":
                    finished.add(run_id)
                key = (run_id, str(kind))
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
    held: Collection[int],
    snapshots: SnapshotStore | None = None,
    revoked: Callable[[], bool] | None = None,
) -> tuple[list[Event], int]:
    """Refold the unfinished runs of the market_data partitions in ``held``; return the
    events not yet written and how many runs were taken up from a snapshot.

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
        partition = topics.partition_for(run.run_id, partitions)
        if run.run_id in finished or partition not in held:
            continue
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
    for partition in sorted(p for p in held if p < partitions):
        if partition in restored and partition not in plain:
            starts[partition] = restored[partition]
        for record in _read(kafka, topics.MARKET_DATA, partition, starts[partition], revoked):
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
    """The engine's runs of the partitions this worker holds, between its intake and the
    broker.

    At each assignment a fresh processor refolds the unfinished runs of the market_data
    partitions assigned, writes what no predecessor wrote, and only then is the engine
    ready; records of partitions the worker does not hold (of a batch taken before a
    rebalance) are passed over, for their owner. A lock keeps a batch and a reassignment
    apart: a revoked worker finishes writing (and committing) the batch in flight before
    the group moves on, and its successor's refold sees that output.

    The refold runs beside the group protocol (``take_up_assignments``), not inside its
    rebalance callback: the consumer sends no heartbeats while that callback runs, and a
    refold longer than the session timeout would have the group drop the worker and
    rebalance again. A revocation cuts a refold under way short; it then writes nothing.
    """

    def __init__(
        self,
        snapshots: SnapshotStore | None = None,
        every: int = SNAPSHOT_EVERY,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        self.ready = asyncio.Event()
        self.started = asyncio.Event()
        self.metrics = metrics
        self.health = health
        self._snapshots = snapshots
        self._every = every
        self.processor = EngineProcessor()
        self.output = OutputFilter({})
        self.publisher: OutputPublisher | None = None
        self.held: frozenset[int] = frozenset()
        self._bootstrap = ""
        self._lock = asyncio.Lock()
        # Revocations so far: an assignment is void once one follows it.
        self._revocations = 0
        # The latest assignment not yet taken up: partitions, topic partitions in all,
        # and the revocations before it.
        self._assignment: tuple[frozenset[int], int, int] | None = None
        self._assignment_came = asyncio.Event()

    async def start(self, bootstrap: str) -> None:
        """Create the topics and connect the publisher; each assignment is refolded by
        ``take_up_assignments``."""
        self._bootstrap = bootstrap

        def work() -> dict[str, int]:
            with KafkaLog(bootstrap) as kafka:
                return create_topics(kafka)

        partitions = await asyncio.get_running_loop().run_in_executor(None, work)
        self.publisher = OutputPublisher(bootstrap, partitions)
        await self.publisher.start()
        if self.health is not None:
            self.health.set("broker", True, bootstrap)
        self.started.set()

    def assigned(self, partitions: frozenset[int], consuming: int) -> None:
        """The group assigned this worker ``partitions`` of market_data and runs
        (``consuming`` topic partitions in all); ``take_up_assignments`` refolds them."""
        self._assignment = (partitions, consuming, self._revocations)
        self._assignment_came.set()

    async def revoked(self) -> None:
        """The group rebalances: a refold under way stops, the batch in flight is written
        (and committed) before this returns, and nothing is held until the next
        assignment is taken up."""
        self._revocations += 1
        async with self._lock:
            self.held = frozenset()
            self.ready.clear()

    async def stop(self) -> None:
        """Nothing is refolded or written from now on; the batch in flight finishes."""
        await self.revoked()
        if self.publisher is not None:
            await self.publisher.stop()

    async def take_up_assignments(self) -> None:
        """Refold each assignment as it comes (see the class); runs until cancelled."""
        await self.started.wait()
        while True:
            await self._assignment_came.wait()
            self._assignment_came.clear()
            async with self._lock:
                assignment, self._assignment = self._assignment, None
                if assignment is not None and assignment[2] == self._revocations:
                    await self._take_up(*assignment)

    async def _take_up(self, partitions: frozenset[int], consuming: int, revocations: int) -> None:
        """Under the lock: refold ``partitions``, write what is missing, be ready."""

        def revoked() -> bool:
            return self._revocations != revocations

        def work() -> tuple[list[Event], int, EngineProcessor, OutputFilter]:
            processor = EngineProcessor(self._snapshots, self._every)
            if not partitions:
                return [], 0, processor, OutputFilter({})
            with KafkaLog(self._bootstrap) as kafka:
                written, metadata, finished = read_state(kafka, partitions, revoked)
                output = OutputFilter(written)
                pending, restored = recover(
                    kafka,
                    processor,
                    output,
                    finished,
                    metadata,
                    partitions,
                    self._snapshots,
                    revoked,
                )
            return pending, restored, processor, output

        try:
            refolded = await asyncio.get_running_loop().run_in_executor(None, work)
        except Revoked:
            log.info("refold of partitions %s stopped: they were revoked", sorted(partitions))
            return
        if revoked():
            return  # their next owner's refold writes what this one found missing
        pending, restored, processor, output = refolded
        assert self.publisher is not None
        await self.publisher.publish(pending)
        self.processor, self.output, self.held = processor, output, partitions
        self.ready.set()
        if self.health is not None:
            self.health.set("consumer group", True, f"{consuming} partitions assigned")
        log.info(
            "refolded the log: %d events written on the way, %d runs taken up from snapshots",
            len(pending),
            restored,
        )
        log.info(
            "engine ready: consuming %d partitions (runs and market_data %s)",
            consuming,
            sorted(partitions),
        )

    async def process_at(
        self,
        records: Iterable[tuple[str, int, bytes, int | None]],
        then: Callable[[frozenset[int]], Awaitable[None]] | None = None,
    ) -> None:
        """A batch of input records in, as (topic, partition, value, offset), their fresh
        events written and acknowledged. Records of partitions this worker does not hold
        are passed over. The offsets of market_data records, where known, place the
        snapshots. ``then`` is awaited with the partitions held once the output is
        acknowledged, before a rebalance can move them: the batch intake commits there."""
        async with self._lock:
            held = self.held
            events: list[Event] = []
            on_record = self.processor.on_record
            candles = runs = 0
            for topic, partition, value, offset in records:
                if partition not in held:
                    continue
                if topic == topics.MARKET_DATA:
                    candles += 1
                    at = None if offset is None else (partition, offset)
                    events.extend(on_record(value, at))
                else:
                    runs += 1
                    events.extend(on_record(value))
            fresh = self.output.fresh(events)
            if fresh:
                assert self.publisher is not None
                await self.publisher.publish(fresh)
            if then is not None:
                await then(held)
        if self.metrics is not None:
            self.metrics.events_in(topics.MARKET_DATA, candles)
            self.metrics.events_in(topics.RUNS, runs)
            self.metrics.events_out(fresh)


def _market_data_partitions(assigned: Iterable[Any]) -> frozenset[int]:
    """The market_data partitions among assigned topic partitions (runs has the same)."""
    return frozenset(tp.partition for tp in assigned if tp.topic == topics.MARKET_DATA)


class _AnnounceAssignment(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, state: EngineState) -> None:
        self._state = state

    async def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("partitions revoked: %d", len(revoked))
        await self._state.revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._state.assigned(_market_data_partitions(assigned), len(assigned))


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
    async def take_up_assignments() -> None:
        # Each assignment's runs are refolded before the intake processes their records.
        await state.start(bootstrap)
        await state.take_up_assignments()

    if intake == "agent":
        _agent_intake(app, state)
    else:
        _batch_intake(app, state, bootstrap)
    return app


def _agent_intake(app: faust.App, state: EngineState) -> None:
    """The intake as a faust agent over ``runs`` and ``market_data``."""
    from mode import Service

    source = app.topic(
        topics.RUNS, topics.MARKET_DATA, value_serializer="raw", key_serializer="raw"
    )

    # faust revokes after the agent's batch in flight is done with (it waits for its
    # records to be acknowledged), and sends the assigned topic partitions; faust's
    # assignor gives a member the same partition numbers of co-partitioned topics.
    @app.on_partitions_revoked.connect
    async def on_revoked(_app: Any, /, *args: Any, **_kwargs: Any) -> None:
        await state.revoked()

    @app.on_partitions_assigned.connect
    async def on_assigned(_app: Any, /, *args: Any, **_kwargs: Any) -> None:
        state.assigned(_market_data_partitions(args[0]), len(args[0]))

    @app.agent(source)
    async def engine(stream: Any) -> None:
        await state.ready.wait()
        # Not waiting for ready again: a rebalance waits for this batch to be processed,
        # and records of partitions not held (yet) are passed over for their refold.
        manual = stream.noack()
        async for events in batches(manual, BATCH, 0.05):
            batch = [(e.message.topic, e.message.partition, e.value, None) for e in events]
            # A stop (SIGTERM) waits for the batch in flight to be written, not half of it.
            await asyncio.shield(state.process_at(batch))
            await acknowledge(manual, events)  # the committed offsets follow the output

    @app.service
    class EngineStop(Service):
        async def on_stop(self) -> None:
            await state.stop()


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
            # The batch in flight is written and its offsets committed, a refold under way
            # stops, and nothing more is written before the consumer leaves the group.
            await state.revoked()
            if self.consumer is not None:
                try:
                    await asyncio.wait_for(self.done.wait(), 60)
                finally:
                    await self.consumer.stop()
            await state.stop()

        @Service.task
        async def consume(self) -> None:
            await state.started.wait()
            if self.should_stop:
                return
            self.consumer = await _batch_consumer(bootstrap, state)
            try:
                while not self.should_stop:
                    polled = await self.consumer.getmany(timeout_ms=200, max_records=BATCH)
                    if polled and await self._until_ready():
                        await asyncio.shield(_process_polled(state, self.consumer, polled))
            finally:
                self.done.set()

        async def _until_ready(self) -> bool:
            """Wait for the assignment's refold; False if the service stops first."""
            while not state.ready.is_set():
                if self.should_stop:
                    return False
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(state.ready.wait(), 0.2)
            return True


async def _batch_consumer(bootstrap: str, state: EngineState) -> Any:
    """The batch intake's consumer, started and subscribed as its group's member."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor

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
        # Range gives a member the same partition numbers of runs and market_data (the
        # default, round robin, may split them): a run's metadata reaches its candles.
        partition_assignment_strategy=(RangePartitionAssignor,),
    )
    await consumer.start()
    consumer.subscribe([topics.RUNS, topics.MARKET_DATA], listener=_AnnounceAssignment(state))
    return consumer


async def _process_polled(state: EngineState, consumer: Any, polled: dict[Any, list[Any]]) -> None:
    """One poll's records through the engine, their output acknowledged, then the offsets
    of the partitions held committed."""
    # Run metadata first, so a run's candles polled with it need not wait.
    ordered = sorted(polled, key=lambda tp: tp.topic != topics.RUNS)

    async def commit(held: frozenset[int]) -> None:
        offsets = {tp: polled[tp][-1].offset + 1 for tp in polled if tp.partition in held}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced while the batch was processed. Its output is written;
            # the partitions' next owner refolds their runs from the log and passes over
            # what is written (with one worker, that owner is this one).
            log.warning("offsets not committed after a rebalance: %s", exc)

    await state.process_at(
        ((tp.topic, tp.partition, m.value, m.offset) for tp in ordered for m in polled[tp]),
        then=commit,
    )
    if state.metrics is not None:
        for tp in polled:
            end = consumer.highwater(tp)
            if end is not None:
                state.metrics.lag(tp.topic, tp.partition, end - polled[tp][-1].offset - 1)


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

    with KafkaLog(bootstrap) as kafka:
        create_topics(kafka)  # before the intake subscribes to them; a mismatch is one line
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
