"""The embedded log: offsets, partitions, time lookups, durability and torn-write recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.embedded_log import SEGMENT_NAME, EmbeddedLog, LogError
from streams.log_port import describe
from streams.topics import partition_for


def _values(n: int, start: int = 0) -> list[tuple[int, bytes]]:
    return [(1_000 + i, b'{"n":%d}' % i) for i in range(start, start + n)]


def _segment(root: Path, topic: str, partition: int) -> Path:
    return root / topic / str(partition) / f"{SEGMENT_NAME}.log"


def test_append_and_read_offset_ranges(tmp_path: Path) -> None:
    with EmbeddedLog(tmp_path) as log:
        log.create_topic("t", 1)
        assert log.append("t", "k", _values(3)) == (0, 0)
        assert log.append("t", "k", _values(2, start=3)) == (0, 3)
        log.commit()
        got = [(r.offset, r.timestamp, r.key, r.value) for r in log.read("t", 0, 1, 4)]
        assert got == [
            (1, 1001, "k", b'{"n":1}'),
            (2, 1002, "k", b'{"n":2}'),
            (3, 1003, "k", b'{"n":3}'),
        ]
        assert log.end_offset("t", 0) == 5
    # A fresh reader sees the same, from disk.
    reader = EmbeddedLog(tmp_path)
    assert [r.offset for r in reader.read("t", 0)] == [0, 1, 2, 3, 4]
    assert reader.end_offset("t", 0) == 5
    assert describe(reader)[0].records == 5


def test_keys_stay_in_one_partition(tmp_path: Path) -> None:
    with EmbeddedLog(tmp_path) as log:
        log.create_topic("t", 4)
        partitions = {log.append("t", f"run-{i}", _values(1))[0] for i in range(20)}
        assert partitions == {partition_for(f"run-{i}", 4) for i in range(20)}
        assert len(partitions) > 1
        assert log.append("t", "run-7", _values(1))[0] == partition_for("run-7", 4)


def test_reading_from_the_middle_of_a_long_partition_uses_the_index(tmp_path: Path) -> None:
    with EmbeddedLog(tmp_path) as log:
        log.create_topic("t", 1)
        for batch in range(10):
            log.append("t", "k", _values(1_000, start=batch * 1_000))
        log.commit()
    index = (tmp_path / "t" / "0" / f"{SEGMENT_NAME}.index").read_text().splitlines()
    assert len(index) >= 1  # one entry about every 4,096 records
    reader = EmbeddedLog(tmp_path)
    got = list(reader.read("t", 0, 8_190, 8_193))
    assert [(r.offset, r.value) for r in got] == [
        (8_190, b'{"n":8190}'),
        (8_191, b'{"n":8191}'),
        (8_192, b'{"n":8192}'),
    ]


def test_offset_for_time_finds_the_first_record_at_or_after(tmp_path: Path) -> None:
    with EmbeddedLog(tmp_path) as log:
        log.create_topic("t", 1)
        log.append("t", "a", [(100, b"1"), (200, b"2"), (300, b"3")])
        # A second run starts back in time: timestamps are not monotonic in the partition.
        log.append("t", "b", [(50, b"4"), (250, b"5")])
        log.commit()
        assert log.offset_for_time("t", 0, 0) == 0
        assert log.offset_for_time("t", 0, 200) == 1
        assert log.offset_for_time("t", 0, 201) == 2
        assert log.offset_for_time("t", 0, 301) == 5  # none: the end


def _write_committed(root: Path) -> None:
    with EmbeddedLog(root) as log:
        log.create_topic("t", 1)
        log.append("t", "k", _values(3))
        log.append("t", "k", _values(2, start=3))
        log.commit()


@pytest.mark.parametrize(
    "damage",
    [
        b"B 5 2 1006 0000",  # a header cut short
        b'B 5 1 1005 00000000 12 k\n1005\t{"n"',  # a payload cut short
        b'B 5 1 1005 deadbeef 13 k\n1005\t{"n":5}\n',  # a payload whose CRC is wrong
        b"garbage\n",
    ],
)
def test_torn_writes_are_cut_off_when_the_partition_is_opened_again(
    tmp_path: Path, damage: bytes
) -> None:
    _write_committed(tmp_path)
    segment = _segment(tmp_path, "t", 0)
    good_size = segment.stat().st_size
    with open(segment, "ab") as handle:
        handle.write(damage)
    # Readers never see the damaged tail.
    assert EmbeddedLog(tmp_path).end_offset("t", 0) == 5
    assert [r.offset for r in EmbeddedLog(tmp_path).read("t", 0)] == [0, 1, 2, 3, 4]
    # The next writer repairs the partition and appends right after the last good record.
    with EmbeddedLog(tmp_path) as log:
        assert log.append("t", "k", _values(1, start=5)) == (0, 5)
        log.commit()
    assert segment.stat().st_size > good_size
    values = [r.value for r in EmbeddedLog(tmp_path).read("t", 0)]
    assert values == [b'{"n":%d}' % i for i in range(6)]


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    with EmbeddedLog(tmp_path) as first:
        first.open_for_writing()
        second = EmbeddedLog(tmp_path)
        with pytest.raises(LogError, match="being written by another process"):
            second.open_for_writing()
    # Released on close.
    with EmbeddedLog(tmp_path) as third:
        third.open_for_writing()


def test_unknown_topics_and_partitions_and_bad_keys(tmp_path: Path) -> None:
    with EmbeddedLog(tmp_path) as log:
        log.create_topic("t", 2)
        with pytest.raises(LogError, match="unknown topic"):
            list(log.read("nope", 0))
        with pytest.raises(LogError, match="unknown partition"):
            list(log.read("t", 2))
        with pytest.raises(LogError, match="invalid key"):
            log.append("t", "two words", _values(1))


def test_corruption_in_the_middle_of_the_log_is_an_error_not_an_end(tmp_path: Path) -> None:
    from streams.embedded_log import CorruptRecord

    _write_committed(tmp_path)
    segment = _segment(tmp_path, "t", 0)
    data = bytearray(segment.read_bytes())
    first_payload = data.index(b"\n") + 1
    data[first_payload] ^= 0x01  # flip a bit in the first batch; the second follows it
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptRecord, match=r"corrupt in t/0 .* at offset 0 .*checksum"):
        list(EmbeddedLog(tmp_path).read("t", 0))
