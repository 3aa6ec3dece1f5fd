"""The log port on Apache Kafka (or any broker speaking its protocol), through aiokafka.

The same topics, keys and JSON values as the embedded log. Guarantees and their limits:

1. A key always maps to the same partition (``streams.topics.partition_for``, computed
   here rather than by the client, so the mapping is the embedded log's too).
2. ``commit()`` returns once the broker acknowledged every record appended so far.
3. Correctness never rests on the broker's high watermark or offsets-for-times (Tansu,
   the broker the tests run against, reports both differently from Apache Kafka): reading
   to the end stops at the first empty fetch at or past the reported end, and time lookups
   use the event time inside each record.
4. ``follow`` hands out each record of the partitions it follows once, in offset order
   per partition, from one consumer that stays assigned: no seek and no idle poll per
   partition per pass, as a loop of ``read`` to the end would cost.
5. A broker that cannot be reached is one ``LogError`` within ``connect_timeout_s``,
   never an endless retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streams.log_port import Group, KeyedValues, LogError, Record, keyed_values
from streams.topics import partition_for, retention_ms

_T = TypeVar("_T")

# How long the broker may hold a follower's fetch open when there is nothing to send. Tansu
# answers a fetch only when this runs out, even when records arrive meanwhile: it bounds
# the latency of following, and the empty fetches it costs while idle (measured on Tansu
# with 9 partitions: 5% of a core at 10 ms, 1.4% at 50 ms, with 3 ms / 6 ms to deliver).
FOLLOW_FETCH_WAIT_MS = 10
# Records one poll of ``follow`` hands out at most, over all its partitions.
FOLLOW_MAX_RECORDS = 10_000


def parse_kafka_url(url: str) -> str:
    """``kafka://host:port[,host:port]`` -> the bootstrap servers string."""
    if not url.startswith("kafka://") or not url[len("kafka://") :].strip("/"):
        raise LogError(f"not a Kafka address: {url!r} (expected kafka://HOST:PORT)")
    return url[len("kafka://") :].strip("/")


async def send_in_batches(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    records: Sequence[tuple[bytes, bytes, int | None]],
) -> list[asyncio.Future[Any]]:
    """Send (key, value, timestamp) records to one partition as whole record batches, as the
    broker stores them: one request per batch instead of one future per record. Returns
    the batches' acknowledgements, in order."""
    acks: list[asyncio.Future[Any]] = []
    batch = producer.create_batch()
    for key, value, ts in records:
        if batch.append(key=key, value=value, timestamp=ts) is None:
            acks.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=ts) is None:
                raise LogError(f"a record of {len(value)} bytes does not fit a batch")
    if batch.record_count():
        acks.append(await producer.send_batch(batch, topic, partition=partition))
    return acks


class KafkaLog:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        default_partitions: int = 1,
        connect_timeout_s: float = 10.0,
        idle_ms: int = 150,
    ) -> None:
        self.bootstrap = bootstrap_servers
        self.identity = f"kafka://{bootstrap_servers}"
        # Tansu reports the base offset of a partition's last batch as its end.
        self.exact_end_offsets = False
        self.readable_after_fork = False  # the client's event loop and sockets are this process's
        self.brokered = True
        self.default_partitions = default_partitions
        self.connect_timeout_s = connect_timeout_s
        self.idle_ms = idle_ms
        self._loop = asyncio.new_event_loop()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._followers: set[KafkaFollower] = set()
        self._partitions: dict[str, int] = {}

    # -- plumbing -----------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        try:
            return self._loop.run_until_complete(
                asyncio.wait_for(coro, timeout) if timeout is not None else coro
            )
        except TimeoutError:
            raise LogError(
                f"the Kafka broker at {self.bootstrap} did not answer within {timeout:g} s"
            ) from None
        except KafkaError as exc:
            raise LogError(f"Kafka at {self.bootstrap}: {exc}") from None

    async def _start(self, make: Any) -> Any:
        client = make()  # aiokafka clients bind to the running loop when they are made
        try:
            await asyncio.wait_for(client.start(), self.connect_timeout_s)
        except (TimeoutError, KafkaError, OSError):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
            raise LogError(
                f"cannot reach the Kafka broker at {self.bootstrap} "
                f"within {self.connect_timeout_s:g} s"
            ) from None
        return client

    def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = lambda: AIOKafkaAdminClient(  # noqa: E731
                bootstrap_servers=self.bootstrap,
                request_timeout_ms=int(self.connect_timeout_s * 1000),
            )
            self._admin = self._loop.run_until_complete(self._start(admin))
        return self._admin

    def _producer_client(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = lambda: AIOKafkaProducer(  # noqa: E731
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=False,  # not required: event ids make replays harmless
                linger_ms=5,
                max_batch_size=1 << 20,
                max_request_size=8 << 20,
                request_timeout_ms=int(self.connect_timeout_s * 1000),
            )
            self._producer = self._loop.run_until_complete(self._start(producer))
        return self._producer

    def _consumer_client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = lambda: AIOKafkaConsumer(  # noqa: E731
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=10,
                max_partition_fetch_bytes=8 << 20,
                request_timeout_ms=int(self.connect_timeout_s * 1000),
            )
            self._consumer = self._loop.run_until_complete(self._start(consumer))
        return self._consumer

    # -- topics -------------------------------------------------------------------------------

    def create_topic(self, topic: str, partitions: int | None = None) -> int:
        count = partitions or self.default_partitions
        configs: dict[str, str] = {}
        retention = retention_ms(topic)
        configs["retention.ms"] = "-1" if retention is None else str(retention)
        admin = self._admin_client()
        try:
            response = self._run(
                admin.create_topics([NewTopic(topic, count, 1, topic_configs=configs)]),
                self.connect_timeout_s,
            )
        except LogError as exc:
            if "TopicAlreadyExists" not in str(exc):
                raise
        else:
            for _name, code, *_ in response.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise LogError(f"cannot create topic {topic!r}: Kafka error code {code}")
        self._partitions.pop(topic, None)
        return self.partitions(topic)

    def partitions(self, topic: str) -> int:
        known = self._partitions.get(topic)
        if known is not None:
            return known
        if topic not in self.topic_names():  # describing an unknown topic may create it
            raise LogError(f"unknown topic {topic!r}")
        described = self._run(self._admin_client().describe_topics([topic]), self.connect_timeout_s)
        found = [
            p
            for entry in described
            if entry.get("topic") == topic and not entry.get("error_code")
            for p in entry.get("partitions", [])
        ]
        if not found:
            raise LogError(f"unknown topic {topic!r}")
        self._partitions[topic] = len(found)
        return len(found)

    def topic_names(self) -> list[str]:
        names = self._run(self._admin_client().list_topics(), self.connect_timeout_s)
        return sorted(n for n in names if not n.startswith("__"))

    # -- writing ------------------------------------------------------------------------------

    def open_for_writing(self) -> None:
        self._producer_client()

    def append(self, topic: str, key: str, records: list[tuple[int, bytes]]) -> tuple[int, int]:
        partition = partition_for(key, self.partitions(topic))
        producer = self._producer_client()
        key_bytes = key.encode()

        async def send_all() -> int:
            acks = await send_in_batches(
                producer, topic, partition, [(key_bytes, value, ts) for ts, value in records]
            )
            # The first batch's offset is the answer; the rest are settled by commit().
            return int((await acks[0]).offset) if acks else -1

        first = self._run(send_all())
        return partition, first

    def commit(self) -> None:
        if self._producer is not None:
            self._run(self._producer.flush(), self.connect_timeout_s * 3)

    # -- reading ------------------------------------------------------------------------------

    def end_offset(self, topic: str, partition: int) -> int:
        """The offset the next record will get.

        Apache Kafka reports it exactly; Tansu reports the base offset of the last batch,
        so the records from there on are read to find the true end either way.
        """
        self._check_partition(topic, partition)
        tp = TopicPartition(topic, partition)
        reported = self._reported_end(tp)
        end = reported
        if reported == 0:
            return 0  # empty on every broker: nothing to look past
        for record in self._fetch(tp, max(reported - 1, 0), None, reported):
            end = record.offset + 1
        return end

    def _reported_end(self, tp: TopicPartition) -> int:
        offsets = self._run(self._consumer_client().end_offsets([tp]), self.connect_timeout_s)
        return int(offsets[tp])

    def _check_partition(self, topic: str, partition: int) -> None:
        if not 0 <= partition < self.partitions(topic):
            raise LogError(f"unknown partition {topic}/{partition}")

    def read(
        self,
        topic: str,
        partition: int,
        from_offset: int = 0,
        to_offset: int | None = None,
        *,
        verify: bool = True,
    ) -> Iterator[Record]:
        """Records with ``from_offset <= offset < to_offset``; to the end when None."""
        self._check_partition(topic, partition)
        if self._producer is not None:
            self.commit()  # read your own writes
        tp = TopicPartition(topic, partition)
        yield from self._fetch(tp, max(from_offset, 0), to_offset, self._reported_end(tp))

    def _fetch(
        self, tp: TopicPartition, start: int, to_offset: int | None, min_end: int
    ) -> Iterator[Record]:
        """Fetch from ``start`` up to ``to_offset``, or to the end of the partition.

        The end is never taken before ``min_end`` (what the broker reported), and past it
        when a poll brings nothing new within ``idle_ms`` (several broker fetch waits, so
        a fetch still in flight from an earlier position cannot end a read early), or
        when a poll short of its limit took the read beyond ``min_end``.
        """
        consumer = self._consumer_client()

        async def position_at_start() -> None:
            consumer.assign([tp])
            consumer.seek(tp, start)

        self._run(position_at_start())
        next_offset = start
        if to_offset is not None:
            min_end = min(min_end, to_offset)
        empty_polls = 0
        while to_offset is None or next_offset < to_offset:
            batch = self._run(
                consumer.getmany(tp, timeout_ms=self.idle_ms, max_records=10_000),
                self.connect_timeout_s * 3,
            )
            messages = batch.get(tp, [])
            if not messages:
                empty_polls += 1
                if next_offset >= min_end:
                    return
                if empty_polls * self.idle_ms > self.connect_timeout_s * 3000:
                    raise LogError(
                        f"{tp.topic}/{tp.partition}: offsets {next_offset}..{min_end} "
                        "did not arrive"
                    )
                continue
            empty_polls = 0
            for message in messages:
                if to_offset is not None and message.offset >= to_offset:
                    return
                next_offset = message.offset + 1
                yield Record(
                    tp.topic,
                    tp.partition,
                    message.offset,
                    int(message.timestamp),
                    (message.key or b"").decode(),
                    message.value or b"",
                )
            if to_offset is None and next_offset > min_end and len(messages) < 10_000:
                # Past the end as it was when the read began, its last batch read whole
                # (a poll short of its limit): done. Waiting for an empty poll instead never
                # ends while a producer keeps appending, as a live feed does.
                return

    def read_values(
        self, topic: str, partition: int, from_offset: int = 0, to_offset: int | None = None
    ) -> Iterator[KeyedValues]:
        """``read`` in groups of one key at consecutive offsets."""
        return keyed_values(self.read(topic, partition, from_offset, to_offset))

    def follow(self, positions: Mapping[tuple[str, int], int], poll_ms: int = 100) -> KafkaFollower:
        """Follow the partitions in ``positions`` (topic, partition -> the next offset to
        hand out) with one consumer of their own, until ``close()``.

        Each step of the iterator is one poll: the groups (topic, partition, first offset,
        values) that arrived, offsets consecutive within a group, or an empty list once
        ``poll_ms`` passed with nothing new (the caller's moment to check for a stop).
        ``lag()`` says how far each partition is behind its end, from what the fetches
        reported: no request of its own.
        """
        for topic, partition in positions:
            self._check_partition(topic, partition)
        if self._producer is not None:
            self.commit()  # read your own writes
        wanted = {TopicPartition(t, p): max(offset, 0) for (t, p), offset in positions.items()}
        consumer = None
        if wanted:
            # A consumer of its own: ``read`` reassigns the shared one to a single partition.
            make = lambda: AIOKafkaConsumer(  # noqa: E731
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=FOLLOW_FETCH_WAIT_MS,
                max_partition_fetch_bytes=8 << 20,
                request_timeout_ms=int(self.connect_timeout_s * 1000),
            )
            consumer = self._loop.run_until_complete(self._start(make))
        follower = KafkaFollower(self, consumer, wanted, poll_ms)
        self._followers.add(follower)
        if consumer is not None:

            async def assign() -> None:
                consumer.assign(list(wanted))
                for tp, offset in wanted.items():
                    consumer.seek(tp, offset)

            try:
                self._run(assign())
            except BaseException:
                follower.close()
                raise
        return follower

    def offset_for_time(self, topic: str, partition: int, timestamp: int) -> int:
        """First offset whose event time (inside the payload) is >= ``timestamp``."""
        last = -1
        for record in self.read(topic, partition):
            last = record.offset
            if int(orjson.loads(record.value).get("timestamp", 0)) >= timestamp:
                return record.offset
        return last + 1

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        for follower in list(self._followers):
            follower.close()

        async def stop_all() -> None:
            if self._producer is not None:
                await self._producer.stop()
            if self._consumer is not None:
                await self._consumer.stop()
            if self._admin is not None:
                await self._admin.close()

        try:
            self._loop.run_until_complete(stop_all())
        finally:
            self._producer = self._consumer = None
            self._admin = None
            self._loop.close()

    def __enter__(self) -> KafkaLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class KafkaFollower:
    """The iterator ``KafkaLog.follow`` returns: one poll a step, and the lag."""

    def __init__(
        self,
        log: KafkaLog,
        consumer: AIOKafkaConsumer | None,
        positions: dict[TopicPartition, int],
        poll_ms: int,
    ) -> None:
        self._log = log
        self._consumer = consumer
        self._next = positions  # the next offset to hand out, per partition
        self._poll_ms = poll_ms
        self._closed = False

    def __iter__(self) -> KafkaFollower:
        return self

    def __next__(self) -> list[Group]:
        if self._closed:
            raise StopIteration
        consumer = self._consumer
        if consumer is None:
            time.sleep(self._poll_ms / 1000)  # no partition to follow: an idle poll
            return []
        polled = self._log._run(
            consumer.getmany(timeout_ms=self._poll_ms, max_records=FOLLOW_MAX_RECORDS),
            self._log.connect_timeout_s * 3 + self._poll_ms / 1000,
        )
        groups: list[Group] = []
        for tp, messages in polled.items():
            first = expected = -1
            values: list[bytes] = []
            for message in messages:
                if message.offset != expected:
                    # Offsets a broker leaves out (compaction, transaction markers,
                    # retention) end a group: a group's offsets are first + index.
                    if values:
                        groups.append((tp.topic, tp.partition, first, values))
                    first, values = message.offset, []
                values.append(message.value or b"")
                expected = message.offset + 1
            if values:
                groups.append((tp.topic, tp.partition, first, values))
                self._next[tp] = expected
        return groups

    def lag(self) -> dict[tuple[str, int], int]:
        """Records of each followed partition not handed out yet, as of the last fetch
        that reached it (within ``FOLLOW_FETCH_WAIT_MS`` while the partition is idle).

        The high watermark of a fetch is the exact end on Apache Kafka and, unlike the
        end Tansu lists (the base offset of the last batch), on Tansu too. Should a broker
        report less than what was handed out, the partition counts as caught up rather
        than behind by a negative amount: this is for metrics, nothing correct rests on it
        (guarantee 3). A partition not fetched yet is left out.
        """
        if self._consumer is None:
            return {}
        lags: dict[tuple[str, int], int] = {}
        for tp, position in self._next.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                lags[(tp.topic, tp.partition)] = max(0, int(highwater) - position)
        return lags

    def close(self) -> None:
        """Stop the consumer; idempotent."""
        self._closed = True
        self._log._followers.discard(self)
        consumer, self._consumer = self._consumer, None
        if consumer is not None and not self._log._loop.is_closed():
            self._log._run(consumer.stop(), self._log.connect_timeout_s)
