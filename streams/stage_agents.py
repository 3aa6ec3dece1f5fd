"""``cdb agent signal|risk|execution``: the staged topology's agents on Kafka.

Each stage is a faust-streaming agent over its input topics (``streams.staged`` says
which), in a faust app of its own whose consumer group is ``claire-de-binare-<stage>``:
SE reads ``runs`` and ``market_data`` and writes ``signals``; RE reads those and
``signals``, ``order_results`` and the hand-off topic, and writes decisions, orders,
alerts, the portfolio and the run's end; XS reads ``orders`` and RE's fill-due records and
writes ``order_results``. Records are taken in batches (``take_events``) and a batch's
output is acknowledged by the broker before the agent takes the next, so the committed
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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from streams import topics
from streams.kafka_log import KafkaLog
from streams.observability import EXECUTION_PORT, RISK_PORT, SIGNAL_PORT, Health, Metrics
from streams.staged import STAGES, StageCore
from streams.worker import OutputPublisher

log = logging.getLogger("cdb.agent")

STAGE_PORTS: dict[str, int] = {
    "signal": SIGNAL_PORT,
    "risk": RISK_PORT,
    "execution": EXECUTION_PORT,
}
BATCH = 4096
# How long a batch waits to fill: short, since RE and XS wait on each other's records.
WITHIN_S = 0.002


def group_id(stage: str) -> str:
    return f"claire-de-binare-{stage}"


def create_topics(kafka: KafkaLog) -> dict[str, int]:
    """Every topic the topology uses, and its partitions."""
    names = (*topics.ALL_TOPICS, topics.STAGE_CONTROL)
    for name in names:
        kafka.create_topic(name)
    return {name: kafka.partitions(name) for name in names}


def refold(kafka: KafkaLog, core: StageCore) -> None:
    """What the log holds of ``core``'s output, and its input of unfinished runs, into
    ``core`` (see the module's steps 1 and 2)."""
    for topic in core.outputs:
        for partition in range(kafka.partitions(topic)):
            for record in kafka.read(topic, partition, verify=False):
                head = orjson.loads(record.value)
                if "sequence" in head:
                    core.mark_written(str(head["run_id"]), str(head["type"]), int(head["sequence"]))
    for topic in core.refold:
        for partition in range(kafka.partitions(topic)):
            core.take_all(r.value for r in kafka.read(topic, partition, verify=False))


class StageRunner:
    """One stage's core between its agent and the broker."""

    def __init__(self, stage: str, metrics: Metrics | None, health: Health | None) -> None:
        self.stage = stage
        self.core: StageCore = STAGES[stage]()
        self.metrics = metrics
        self.health = health
        self.ready = asyncio.Event()
        self.publisher: OutputPublisher | None = None

    async def start(self, bootstrap: str) -> None:
        def work() -> dict[str, int]:
            with KafkaLog(bootstrap) as kafka:
                partitions = create_topics(kafka)
                refold(kafka, self.core)
            return partitions

        partitions = await asyncio.get_running_loop().run_in_executor(None, work)
        # No linger: RE and XS wait on each other's records, once per fill.
        self.publisher = OutputPublisher(bootstrap, partitions, linger_ms=0)
        await self.publisher.start()
        written = await self._publish()
        if self.health is not None:
            self.health.set("broker", True, bootstrap)
        log.info("%s agent: refolded the log, %d records written on the way", self.stage, written)
        self.ready.set()

    async def process(self, values: Iterable[bytes]) -> None:
        """A batch of input records in; their output written and acknowledged."""
        started = time.perf_counter()
        core = self.core
        before = core.records_in
        core.take_all(values)
        await self._publish()
        if self.metrics is not None:
            self.metrics.events_in(f"{self.stage} agent input", core.records_in - before)
            self.metrics.latency(f"{self.stage}_batch", time.perf_counter() - started)

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

    from streams import faust_transport

    faust_transport.register()
    runner = StageRunner(stage, metrics, health)
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
    )
    source = app.topic(*runner.core.inputs, value_serializer="raw", key_serializer="raw")

    @app.task  # type: ignore[untyped-decorator]
    async def refold_unfinished_runs() -> None:
        await runner.start(bootstrap)

    @app.on_partitions_assigned.connect
    async def announce(_app: Any, /, *args: Any, **_kwargs: Any) -> None:
        if health is not None:
            health.set("consumer group", True, f"{len(args[0])} partitions assigned")

    @app.agent(source, name=f"{stage}-stage")
    async def agent(stream: Any) -> None:
        await runner.ready.wait()
        async for events in stream.take_events(BATCH, within=WITHIN_S):
            try:
                # A stop waits for the batch in flight to be written, not half of it.
                await asyncio.shield(runner.process(e.value for e in events))
            except Exception as exc:
                log.critical("%s agent stopped: %s", stage, exc)
                if metrics is not None:
                    metrics.error(stage)
                if health is not None:
                    health.set("stage", False, str(exc))
                raise
            if metrics is not None:
                _record_lag(app, metrics, events)

    @app.service
    class Publisher(faust.Service):
        async def on_stop(self) -> None:
            await runner.stop()

    return app


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
