"""One contract for the log port, run against every implementation: embedded and Kafka."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.embedded_log import EmbeddedLog
from streams.kafka_log import KafkaLog
from streams.log_port import EventLog, LogError, describe
from streams.topics import partition_for

_names = itertools.count()


@pytest.fixture(params=["embedded", "kafka"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventLog]:
    if request.param == "embedded":
        implementation: EventLog = EmbeddedLog(tmp_path / "log")
    else:
        implementation = KafkaLog(request.getfixturevalue("kafka_bootstrap"))
    try:
        yield implementation
    finally:
        implementation.close()


def _topic() -> str:
    # Topics are never reused between tests, so one broker serves the whole session.
    return f"contract-{next(_names)}"


def _records(n: int, start: int = 0) -> list[tuple[int, bytes]]:
    return [
        (1_000 + i, b'{"timestamp":%d,"n":%d}' % (1_000 + i, i)) for i in range(start, start + n)
    ]


def test_a_created_topic_has_its_partitions(log: EventLog) -> None:
    topic = _topic()
    assert log.create_topic(topic, 3) == 3
    assert log.create_topic(topic, 3) == 3  # creating again is harmless
    assert log.partitions(topic) == 3
    assert topic in log.topic_names()


def test_appended_records_read_back_in_order_with_dense_offsets(log: EventLog) -> None:
    topic = _topic()
    log.create_topic(topic, 1)
    log.open_for_writing()
    assert log.append(topic, "run-a", _records(3)) == (0, 0)
    assert log.append(topic, "run-a", _records(4, start=3)) == (0, 3)
    log.commit()
    got = list(log.read(topic, 0))
    assert [r.offset for r in got] == list(range(7))
    assert [r.value for r in got] == [v for _, v in _records(7)]
    assert {r.key for r in got} == {"run-a"}
    assert [r.timestamp for r in got] == [ts for ts, _ in _records(7)]
    assert log.end_offset(topic, 0) == 7


def test_offset_ranges_are_half_open(log: EventLog) -> None:
    topic = _topic()
    log.create_topic(topic, 1)
    log.append(topic, "k", _records(10))
    log.commit()
    assert [r.offset for r in log.read(topic, 0, 3, 6)] == [3, 4, 5]
    assert [r.offset for r in log.read(topic, 0, 8)] == [8, 9]
    assert list(log.read(topic, 0, 10)) == []


def test_a_key_always_lands_in_the_same_partition(log: EventLog) -> None:
    topic = _topic()
    log.create_topic(topic, 4)
    for key in ("run-1", "run-2", "run-3", "bt-0123456789ab"):
        partition, _ = log.append(topic, key, _records(2))
        assert partition == partition_for(key, 4)
    log.commit()
    everything = [r for p in range(4) for r in log.read(topic, p)]
    assert sorted(r.key for r in everything) == sorted(
        ["run-1", "run-2", "run-3", "bt-0123456789ab"] * 2
    )
    for record in everything:
        assert record.partition == partition_for(record.key, 4)


def test_time_lookup_uses_event_time(log: EventLog) -> None:
    topic = _topic()
    log.create_topic(topic, 1)
    log.append(topic, "k", _records(5))
    log.commit()
    assert log.offset_for_time(topic, 0, 1_002) == 2
    assert log.offset_for_time(topic, 0, 0) == 0
    assert log.offset_for_time(topic, 0, 9_999) == 5


def test_describe_counts_every_record(log: EventLog) -> None:
    topic = _topic()
    log.create_topic(topic, 2)
    log.append(topic, "run-1", _records(5))
    log.commit()
    info = next(i for i in describe(log) if i.name == topic)
    assert info.partitions == 2 and info.records == 5


def test_unknown_topics_and_partitions_are_one_clear_error(log: EventLog) -> None:
    topic = _topic()
    log.create_topic(topic, 1)
    with pytest.raises(LogError, match="unknown partition"):
        list(log.read(topic, 5))
    with pytest.raises(LogError, match="unknown topic"):
        log.partitions(_topic())
