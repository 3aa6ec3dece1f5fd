"""Following a Kafka log (Tansu): ``KafkaLog.follow`` and the projector built on it.

What is held:

- records appended while a follower runs reach it in order and exactly once, in groups
  of consecutive offsets, across several partitions; its lag comes down to 0;
- a follower started from positions in the middle of partitions hands out exactly the
  records from there on;
- a group ends where the offsets a broker hands out are not consecutive;
- ``projections.projector.follow`` folds exactly once into the read models, and when
  another writer moves its checkpoints under it (a second projector), it follows on from
  there instead of folding anything twice;
- ``cdb project`` on Kafka, SIGKILLed mid-stream and restarted (twice), leaves the read
  models of a projector that ran uninterrupted beside it: the same projection digest;
- ``cdb project`` on Kafka rides out a store outage: it retries, says so, and once the
  store is back folds on from its checkpoints, losing and doubling nothing.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from sqlalchemy import func, select

from domain.run_config import BacktestConfig
from projections import tables
from projections.digest import projection_digest
from projections.projector import catch_up, follow
from projections.store import open_store, sqlite_url
from streams.kafka_log import KafkaFollower, KafkaLog
from streams.live import run_feed
from streams.mock_feed import mock_sources
from streams.topics import partition_for
from tests.support.outages import postgres_database_away
from tests.support.probes import healthy, metric_total
from tests.support.processes import (
    ROOT,
    cdb_output,
    cdb_process,
    cdb_status,
    faust_data_env,
    free_port,
    local_store_env,
    wait_for,
)


def _value(topic: str, partition: int, n: int) -> bytes:
    return f"{topic}/{partition}/{n}".encode()


def _collect(
    follower: KafkaFollower,
    received: dict[tuple[str, int], list[tuple[int, bytes]]],
    until: Callable[[], bool],
    timeout_s: float = 30,
) -> None:
    """Poll ``follower`` into ``received`` until ``until()``; every group's offsets are
    consecutive (first + index) and continue where the partition's last group ended."""
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "records did not arrive in time"
        for topic, partition, first, values in next(follower):
            got = received.setdefault((topic, partition), [])
            if got:
                assert first == got[-1][0] + 1, (topic, partition, first, got[-1][0])
            got.extend((first + i, value) for i, value in enumerate(values))


def test_records_appended_while_following_arrive_in_order_exactly_once(
    fresh_kafka: str,
) -> None:
    topic, partitions, per_partition = "follow-live", 3, 400
    with KafkaLog(fresh_kafka) as setup:
        setup.create_topic(topic, partitions)
    # A key that lands in each partition (partition_for is the log's own mapping).
    keys: dict[int, str] = {}
    for n in range(1000):
        keys.setdefault(partition_for(f"k{n}", partitions), f"k{n}")
    assert len(keys) == partitions
    errors: list[BaseException] = []

    def write() -> None:
        # A writer of its own (its own event loop), appending in small batches while the
        # follower runs, to every partition in turn.
        try:
            with KafkaLog(fresh_kafka) as writer:
                writer.open_for_writing()
                for start in range(0, per_partition, 20):
                    for partition, key in keys.items():
                        records = [
                            (1, _value(topic, partition, i)) for i in range(start, start + 20)
                        ]
                        writer.append(topic, key, records)
                    writer.commit()
                    time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)

    received: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
    with KafkaLog(fresh_kafka) as log:
        follower = log.follow({(topic, p): 0 for p in range(partitions)}, poll_ms=50)
        assert next(follower) == []  # nothing yet: an idle poll, an empty list
        writer = threading.Thread(target=write)
        writer.start()
        try:
            _collect(
                follower,
                received,
                lambda: (
                    sum(map(len, received.values())) >= partitions * per_partition or bool(errors)
                ),
            )
        finally:
            writer.join(60)
        assert not errors, errors
        for _ in range(5):  # nothing more comes, nothing twice
            assert next(follower) == []
        wait_for(
            lambda: (
                next(follower) == []
                and follower.lag() == {(topic, p): 0 for p in range(partitions)}
            ),
            "the lag to come down to 0",
        )
        follower.close()
        with pytest.raises(StopIteration):
            next(follower)

    assert set(received) == {(topic, p) for p in range(partitions)}
    for (_, partition), got in received.items():
        assert [offset for offset, _ in got] == list(range(per_partition))
        assert [value for _, value in got] == [
            _value(topic, partition, i) for i in range(per_partition)
        ]


def test_following_from_positions_in_the_middle(fresh_kafka: str) -> None:
    topic = "follow-middle"
    with KafkaLog(fresh_kafka) as log:
        log.create_topic(topic, 2)
        log.open_for_writing()
        written: dict[int, list[bytes]] = {0: [], 1: []}
        for n in range(60):
            key = f"key-{n % 7}"
            partition, _ = log.append(topic, key, [(1, f"{n}".encode())])
            written[partition].append(f"{n}".encode())
        log.commit()
        assert all(len(values) > 12 for values in written.values()), written
        start = {(topic, 0): 5, (topic, 1): len(written[1]) - 3}
        follower = log.follow(start, poll_ms=50)
        received: dict[tuple[str, int], list[tuple[int, bytes]]] = {}

        def have(extra: int) -> bool:
            return all(
                len(received.get((topic, p), [])) >= len(written[p]) + extra - start[(topic, p)]
                for p in (0, 1)
            )

        _collect(follower, received, lambda: have(0))
        # And what comes after, too (appended through the same log: read your own writes).
        for n in range(60, 80):
            partition, _ = log.append(topic, f"key-{n % 7}", [(1, f"{n}".encode())])
            written[partition].append(f"{n}".encode())
        log.commit()
        _collect(follower, received, lambda: have(0))
        for _ in range(3):
            assert next(follower) == []
        follower.close()

    for p in (0, 1):
        first = start[(topic, p)]
        got = received[(topic, p)]
        assert [offset for offset, _ in got] == list(range(first, len(written[p])))
        assert [value for _, value in got] == written[p][first:]


class _Message:
    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.value = f"v{offset}".encode()


class _Consumer:
    """A consumer whose single poll hands out offsets with gaps (as compaction or
    transaction markers leave them on Apache Kafka)."""

    def __init__(self, offsets: list[int]) -> None:
        self.offsets = offsets

    async def getmany(self, **_: Any) -> dict[TopicPartition, list[_Message]]:
        offsets, self.offsets = self.offsets, []
        return {TopicPartition("t", 0): [_Message(o) for o in offsets]} if offsets else {}

    def highwater(self, _tp: TopicPartition) -> int:
        return 12

    async def stop(self) -> None:
        pass


def test_a_group_ends_where_offsets_are_not_consecutive() -> None:
    log = KafkaLog("127.0.0.1:9")  # never connected: the follower is given its consumer
    try:
        consumer: Any = _Consumer([3, 4, 5, 7, 8, 11])
        follower = KafkaFollower(log, consumer, {TopicPartition("t", 0): 3}, poll_ms=1)
        assert next(follower) == [
            ("t", 0, 3, [b"v3", b"v4", b"v5"]),
            ("t", 0, 7, [b"v7", b"v8"]),
            ("t", 0, 11, [b"v11"]),
        ]
        assert follower.lag() == {("t", 0): 0}
        assert next(follower) == []
        follower.close()
    finally:
        log.close()


def _feed(bootstrap: str, count: int, speed: float | None, seed: int = 5) -> str:
    """Publish a mock run's metadata and candles (no worker: market_data and runs)."""
    config = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 3, "slow": 8})
    sources = mock_sources(["BTC_USDT", "ETH_USDT"], seed=seed, interval="1m", count=count)
    with KafkaLog(bootstrap) as kafka:
        return run_feed(config, sources, kafka, speed=speed).run_id


def test_the_projector_follows_exactly_once_and_yields_to_another_writer(
    tmp_path: Path, fresh_kafka: str
) -> None:
    run_id = _feed(fresh_kafka, 300, None)
    with KafkaLog(fresh_kafka) as log:
        for name in ("reference", "followed"):
            (tmp_path / name).mkdir()
        reference = open_store(sqlite_url(tmp_path / "reference"))
        total = catch_up(log, reference).events
        expected = projection_digest(reference, run_id)
        reference.dispose()

        store = open_store(sqlite_url(tmp_path / "followed"))
        folded: list[int] = []
        other: list[int] = []

        def on_batch(topic: str | None, n: int, lags: Mapping[tuple[str, int], int]) -> None:
            folded.append(n)
            if len(folded) == 1:
                # Another projector of the same log and store folds everything now: the
                # follower's next write finds its checkpoint moved and goes on from there.
                with KafkaLog(fresh_kafka) as second:
                    other.append(catch_up(second, store).events)

        def done() -> bool:
            return sum(folded) + sum(other) >= total and folded[-1:] == [0]

        try:
            # batch_size 50: many transactions, the first of which the other writer follows.
            progress = follow(log, store, done, on_batch=on_batch, batch_size=50, poll_s=0.05)
            assert progress.events == sum(folded)
            assert progress.events + other[0] == total  # nothing folded twice
            assert projection_digest(store, run_id) == expected
        finally:
            store.dispose()


# -- cdb project, killed and restarted --------------------------------------------------------


def test_a_projector_killed_mid_stream_equals_one_that_ran_through(
    tmp_path: Path, fresh_kafka: str
) -> None:
    count = 1500  # candles per symbol: 1-minute candles at 10000x, about 9 s of feed
    broker = ["--log", f"kafka://{fresh_kafka}"]
    steady, killed = (
        ["--data-dir", str(tmp_path / "steady"), *broker],
        [
            "--data-dir",
            str(tmp_path / "killed"),
            *broker,
        ],
    )
    out = tmp_path / "out"
    out.mkdir()
    worker_port, steady_port, killed_port = free_port(), free_port(), free_port()
    mock = ["--symbols", "BTC_USDT,ETH_USDT", "--interval", "1m", "--seed", "3"]
    mock += ["--count", str(count), "--speed", "10000", "--metrics-port", "-1"]

    def project(places: list[str], port: int) -> list[str]:
        return [*places, "project", "--poll", "0.05", "--metrics-port", str(port)]

    with contextlib.ExitStack() as stack:
        worker = stack.enter_context(
            cdb_process(
                out / "worker.log",
                *steady,
                "worker",
                "--loglevel",
                "info",
                "--metrics-port",
                str(worker_port),
                env={**local_store_env(), **faust_data_env(tmp_path / "faust")},
            )
        )
        stack.enter_context(cdb_process(out / "steady.log", *project(steady, steady_port)))
        projector = stack.enter_context(
            cdb_process(out / "killed.log", *project(killed, killed_port))
        )
        wait_for(lambda: healthy(worker_port), "the worker to be ready", 120)
        wait_for(lambda: healthy(steady_port) and healthy(killed_port), "the projectors")
        feed = stack.enter_context(cdb_process(out / "feed.log", *steady, "feed", "mock", *mock))

        def folded(candles: int) -> Callable[[], bool]:  # by this process of the projector
            metric = "cdb_events_in_total"
            return lambda: metric_total(killed_port, metric, topic="market_data") >= candles

        for candles in (300, 750):
            # Killed while the run streams in: the feed is still publishing.
            wait_for(folded(candles), "the projector to fold candles")
            assert feed.poll() is None, "the feed ended before the kill"
            projector.send_signal(signal.SIGKILL)
            assert projector.wait(timeout=30) == -signal.SIGKILL
            projector = stack.enter_context(
                cdb_process(out / "killed.log", *project(killed, killed_port))
            )

        assert feed.wait(timeout=120) == 0, (out / "feed.log").read_text(errors="replace")
        started = re.search(r"cdb: run (\S+) started", (out / "feed.log").read_text())
        assert started is not None
        run_id = started[1]

        def complete(places: list[str]) -> bool:
            status = cdb_status(places, run_id)
            return status.get("status") == "COMPLETED" and status.get("lag") == 0

        wait_for(lambda: complete(steady) and complete(killed), "both read models", 120)
        assert worker.poll() is None

    final = cdb_status(killed, run_id)
    assert final["candles"] == 2 * count and final["fills"] > 0, final
    digests = [
        cdb_output(*places, "projections", "digest", "--run-id", run_id)
        for places in (steady, killed)
    ]
    assert all(d.returncode == 0 for d in digests), [d.stderr for d in digests]
    assert digests[0].stdout.strip() == digests[1].stdout.strip() != ""


def test_the_projector_on_kafka_rides_out_a_store_outage(
    tmp_path: Path, fresh_kafka: str, postgres_url: str
) -> None:
    runs = [_feed(fresh_kafka, 400, None, seed=21)]
    store = open_store(postgres_url)

    def projected(run_id: str) -> bool:
        try:
            with store.connect() as conn:
                candles = conn.execute(
                    select(func.count())
                    .select_from(tables.candles)
                    .where(tables.candles.c.run_id == run_id)
                ).scalar_one()
            return bool(candles == 800)
        except Exception:  # the store is away: not yet
            return False

    places = ["--data-dir", str(tmp_path / "var"), "--log", f"kafka://{fresh_kafka}"]
    projector = subprocess.Popen(
        [sys.executable, "-m", "cdb", *places, "--store", postgres_url, "project"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=local_store_env(),
    )
    try:
        wait_for(lambda: projected(runs[0]), "the first run to be projected")
        with postgres_database_away(store):
            runs.append(_feed(fresh_kafka, 400, None, seed=22))  # arrives while it is away
            time.sleep(2.0)
            assert projector.poll() is None  # still running, retrying
        wait_for(lambda: projected(runs[1]), "the second run after the store came back")
        projector.send_signal(signal.SIGTERM)
        _, errors = projector.communicate(timeout=30)
        assert projector.returncode == 0, errors
        assert "unhealthy: store unavailable" in errors
        assert errors.index("unhealthy") < errors.index("healthy: the store is back")
    finally:
        if projector.poll() is None:
            projector.kill()

    (tmp_path / "reference").mkdir()
    reference = open_store(sqlite_url(tmp_path / "reference"))
    try:
        with KafkaLog(fresh_kafka) as log:
            catch_up(log, reference)
        for run_id in runs:
            assert projection_digest(store, run_id) == projection_digest(reference, run_id)
    finally:
        reference.dispose()
        store.dispose()
