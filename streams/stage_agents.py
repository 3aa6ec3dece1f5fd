"""``cdb agent signal|risk|execution``: the staged topology's agents on Kafka.

Each stage is a faust-streaming agent over its input topics (``streams.staged`` says
which), in a faust app of its own whose consumer group is ``claire-de-binare-<stage>``:
SE reads ``runs`` and ``market_data`` and writes ``signals``; RE reads those and
``signals``, ``order_results`` and the hand-off topic, and writes decisions, orders,
alerts, the portfolio and the run's end; XS reads ``orders`` and RE's fill-due records and
writes ``order_results``. Records are taken in batches (``streams.faust_batches``), and a batch's
records are acknowledged only once the broker acknowledged its output, so the committed
offsets never run ahead of the output.

Exactly once per stage, without Kafka transactions:

1. At start, before the agent consumes, the stage reads what its output topics hold:
   those events are never written again (``OutputFilter``, by run, type and sequence).
2. It then refolds the unfinished runs from its input topics, writing only what a killed
   predecessor computed and did not write.
3. The agent consumes from the group's committed offsets; what the refold already took is
   passed over by sequence or id.

State lives in the deterministic stage objects (``domain.stages``), rebuilt from the log
as above; no faust table holds it (see docs/kafka.md for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from streams import topics
from streams.faust_batches import acknowledge, batches
from streams.kafka_log import KafkaLog
from streams.log_port import LogError
from streams.observability import Health, Metrics
from streams.staged import STAGES, StageCore
from streams.worker import OutputPublisher

log = logging.getLogger("cdb.agent")

BATCH = 4096
# After this long without records an agent polls the broker less often (see
# ``streams.faust_transport``); its next record sets the short wait again.
IDLE_AFTER_S = 1.0
# How long a batch waits for more records once none are waiting: short, since RE and XS
# wait on each other's records.
SETTLE_S = 0.002


def group_id(stage: str) -> str:
    return f"claire-de-binare-{stage}"


def create_topics(kafka: KafkaLog) -> dict[str, int]:
    """Every topic the topology uses, and its partitions: the same number for all, since a
    run's records must sit in the same partition of every topic (co-partitioned)."""
    names = (*topics.ALL_TOPICS, topics.STAGE_CONTROL)
    for name in names:
        kafka.create_topic(name)
    partitions = {name: kafka.partitions(name) for name in names}
    if len(set(partitions.values())) != 1:
        counts = ", ".join(f"{name} {n}" for name, n in sorted(partitions.items()))
        raise LogError(
            f"the topics' partition counts differ ({counts}): the stage agents need the "
            "same count on every topic, so that a run's records share a partition number"
        )
    return partitions


def refold(kafka: KafkaLog, core: StageCore, partitions: Iterable[int]) -> None:
    """What ``partitions`` of the log hold of ``core``'s output, and their input of
    unfinished runs, into ``core`` (see the module's steps 1 and 2)."""
    held = sorted(partitions)
    for topic in core.outputs:
        for partition in held:
            for record in kafka.read(topic, partition, verify=False):
                head = orjson.loads(record.value)
                if "sequence" in head:
                    core.mark_written(str(head["run_id"]), str(head["type"]), int(head["sequence"]))
    for topic in core.refold:
        for partition in held:
            core.take_all(r.value for r in kafka.read(topic, partition, verify=False))


class StageRunner:
    """One stage's core between its agent and the broker.

    The core holds the runs of the partitions this instance is assigned: at each
    assignment a fresh core refolds those partitions from the log, and records of other
    partitions (of a batch taken before a rebalance) are left to their new owner. A lock
    keeps a batch and a reassignment apart: a revoked instance finishes writing the batch
    in flight before the group moves on, and its successor's refold sees that output.
    """

    def __init__(
        self,
        stage: str,
        metrics: Metrics | None,
        health: Health | None,
        fetch_wait: Callable[[bool], None] | None = None,
    ) -> None:
        self.stage = stage
        # Told True when the agent has been idle for IDLE_AFTER_S, False when records come.
        self._fetch_wait = fetch_wait
        self._idle = False
        self._last_records = time.monotonic()
        self.core: StageCore = STAGES[stage]()
        self.metrics = metrics
        self.health = health
        self.ready = asyncio.Event()
        self.publisher: OutputPublisher | None = None
        self.partitions: frozenset[int] = frozenset()
        self._bootstrap = ""
        self._lock = asyncio.Lock()
        self._started = asyncio.Event()
        self._generation = 0  # moves on at every revocation and assignment
        self._refolds: set[asyncio.Future[None]] = set()

    async def start(self, bootstrap: str) -> None:
        """Connect the publisher; the refold waits for the first assignment."""
        self._bootstrap = bootstrap

        def work() -> dict[str, int]:
            with KafkaLog(bootstrap) as kafka:
                return create_topics(kafka)

        counts = await asyncio.get_running_loop().run_in_executor(None, work)
        # No linger: RE and XS wait on each other's records, once per fill.
        self.publisher = OutputPublisher(bootstrap, counts, linger_ms=0)
        await self.publisher.start()
        if self.health is not None:
            self.health.set("broker", True, bootstrap)
        self._started.set()

    async def revoked(self) -> None:
        """The group rebalances: the batch in flight is written before this returns; a
        refold still under way will write nothing."""
        self._generation += 1
        self.ready.clear()
        async with self._lock:
            self.partitions = frozenset()

    async def assigned(self, partitions: frozenset[int]) -> None:
        """This instance now holds ``partitions``. The refold runs beside the group's
        protocol, not inside its callback (no heartbeats go out while that runs, and a
        long refold would cost the membership); batches wait for it."""
        self._generation += 1
        task = asyncio.ensure_future(self._take_over(partitions, self._generation))
        self._refolds.add(task)
        task.add_done_callback(self._refolds.discard)

    async def _take_over(self, partitions: frozenset[int], generation: int) -> None:
        """Refold ``partitions``' unfinished runs, write what no predecessor wrote, then
        let batches in; nothing if another rebalance came meanwhile."""
        await self._started.wait()
        core: StageCore = STAGES[self.stage]()

        def work() -> None:
            with KafkaLog(self._bootstrap) as kafka:
                refold(kafka, core, partitions)

        await asyncio.get_running_loop().run_in_executor(None, work)
        async with self._lock:
            if generation != self._generation:
                return  # revoked or reassigned while refolding: the next owner refolds
            self.core, self.partitions = core, partitions
            written = await self._publish()
            log.info(
                "%s agent: holds partitions %s; refolded them, %d records written on the way",
                self.stage,
                sorted(partitions),
                written,
            )
            if self.health is not None:
                self.health.set("consumer group", True, f"partitions {sorted(partitions)}")
            self.ready.set()

    async def process(self, records: Iterable[tuple[int, bytes]]) -> None:
        """A batch of (partition, value) input records in; their output written and
        acknowledged. It waits for a refold under way; records of partitions this instance
        no longer holds are passed (their new owner refolds them)."""
        self.records_came()
        await self.ready.wait()
        async with self._lock:
            started = time.perf_counter()
            core, held = self.core, self.partitions
            before = core.records_in
            core.take_all(value for partition, value in records if partition in held)
            await self._publish()
            if self.metrics is not None:
                self.metrics.events_in(f"{self.stage} agent input", core.records_in - before)
                self.metrics.latency(f"{self.stage}_batch", time.perf_counter() - started)
                self.metrics.held(self.stage, core.backlog())

    def records_came(self) -> None:
        """Records reached the agent: the short fetch wait again, if it was idle."""
        self._last_records = time.monotonic()
        if self._idle:
            self._idle = False
            if self._fetch_wait is not None:
                self._fetch_wait(False)

    def check_idle(self) -> None:
        """Poll less once no records came for ``IDLE_AFTER_S`` (timing only: what a stage
        writes never depends on it)."""
        if not self._idle and time.monotonic() - self._last_records > IDLE_AFTER_S:
            self._idle = True
            if self._fetch_wait is not None:
                self._fetch_wait(True)

    async def _publish(self) -> int:
        assert self.publisher is not None
        events, control = self.core.drain()
        await self.publisher.publish(
            events, [(str(c["run_id"]), orjson.dumps(c), None) for c in control]
        )
        if self.metrics is not None:
            self.metrics.events_out(events)
            self.metrics.records_out(topics.STAGE_CONTROL, len(control))
        return len(events) + len(control)

    async def stop(self) -> None:
        if self.publisher is not None:
            await self.publisher.stop()


def build_stage_app(
    stage: str,
    bootstrap: str,
    metrics: Metrics | None = None,
    health: Health | None = None,
    datadir: Path | None = None,
) -> Any:
    """The faust app of ``stage``'s agent; nothing connects until its worker starts."""
    import faust
    import mode

    from streams import faust_transport

    faust_transport.register()

    def fetch_wait(idle: bool) -> None:
        faust_transport.set_fetch_wait(
            faust_transport.IDLE_FETCH_WAIT_MS if idle else faust_transport.FETCH_MAX_WAIT_MS
        )

    runner = StageRunner(stage, metrics, health, fetch_wait)
    extra: dict[str, Any] = {} if datadir is None else {"datadir": str(datadir)}
    app = faust.App(
        group_id(stage),
        broker=f"{faust_transport.SCHEME}://{bootstrap}",
        **extra,
        store="memory://",
        web_enabled=False,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,  # create_topics made them
        topic_disable_leader=True,
        broker_commit_interval=1.0,
        # A killed agent's partitions go to the group's others within seconds.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=6.0,
        # An agent that fails stops the process (exit code 1), never restarts past the
        # batch it failed on: a supervisor restarts it, and the refold takes it up.
        agent_supervisor=mode.CrashingSupervisor,
    )

    @app.task  # type: ignore[untyped-decorator]
    async def connect_publisher() -> None:
        await runner.start(bootstrap)

    @app.timer(IDLE_AFTER_S / 2)  # type: ignore[untyped-decorator]
    async def poll_less_when_idle() -> None:
        runner.check_idle()

    @app.on_partitions_revoked.connect
    async def on_revoked(_app: Any, /, *args: Any, **_kwargs: Any) -> None:
        await runner.revoked()

    @app.on_partitions_assigned.connect
    async def on_assigned(_app: Any, /, *args: Any, **_kwargs: Any) -> None:
        # faust sends the assigned topic partitions; the topics are co-partitioned.
        await runner.assigned(frozenset(tp.partition for tp in args[0]))

    _add_agent(app, runner)

    @app.service
    class Publisher(faust.Service):
        async def on_stop(self) -> None:
            await runner.stop()

    return app


def _add_agent(app: Any, runner: StageRunner) -> None:
    """The stage's faust agent over its inputs.

    One agent, which never stops taking records: faust delivers every topic of an app
    through one conductor, so an agent that waited (say, for room to buffer more candles)
    would hold back the records it waits for. RE keeps the candles it cannot fold yet as
    their compact records instead (``streams.staged``)."""
    source = app.topic(*runner.core.inputs, value_serializer="raw", key_serializer="raw")

    async def agent(stream: Any) -> None:
        await _consume(app, runner, stream)

    app.agent(source, name=f"{runner.stage}-stage")(agent)


async def _consume(app: Any, runner: StageRunner, stream: Any) -> None:
    await runner.ready.wait()
    metrics, health = runner.metrics, runner.health
    manual = stream.noack()
    async for events in batches(manual, BATCH, SETTLE_S):
        try:
            # A stop waits for the batch in flight to be written, not half of it.
            batch = [(e.message.partition, e.value) for e in events]
            await asyncio.shield(runner.process(batch))
        except Exception as exc:
            log.critical("%s agent stopped: %s", runner.stage, exc)
            if metrics is not None:
                metrics.error(runner.stage)
            if health is not None:
                health.set("stage", False, str(exc))
            raise
        # Only now: the committed offsets follow the output, never lead it.
        await acknowledge(manual, events)
        if metrics is not None:
            _record_lag(app, metrics, events)


def _record_lag(app: Any, metrics: Metrics, events: list[Any]) -> None:
    latest: dict[Any, int] = {}
    for event in events:
        message = event.message
        latest[message.tp] = message.offset
    for tp, offset in latest.items():
        with contextlib.suppress(Exception):
            end = app.consumer.highwater(tp)
            if end is not None:
                metrics.lag(tp.topic, tp.partition, end - offset - 1)


def run_stage_agent(
    stage: str,
    bootstrap: str,
    loglevel: str = "warn",
    metrics: Metrics | None = None,
    health: Health | None = None,
    datadir: Path | None = None,
) -> int:
    """Run ``stage``'s agent until SIGTERM or SIGINT."""
    import faust

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} (expected one of {', '.join(STAGES)})")
    with KafkaLog(bootstrap) as kafka:
        create_topics(kafka)  # before the agent subscribes to them
    with contextlib.ExitStack() as cleanup:
        if datadir is None:
            datadir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(f"-cdb-{stage}")))
        datadir.mkdir(parents=True, exist_ok=True)
        app = build_stage_app(stage, bootstrap, metrics, health, datadir)
        worker = faust.Worker(app, loglevel=loglevel, quiet=True)
        worker.execute_from_commandline()
    return 0
