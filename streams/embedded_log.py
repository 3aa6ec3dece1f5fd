"""The embedded log: Kafka-style topics, partitions and offsets in files, no server.

Layout under the log directory::

    <topic>/topic.json                         partition count
    <topic>/<partition>/00000000000000000000.log     records, one per line
    <topic>/<partition>/00000000000000000000.index   sparse offset/position/time index

A record line is ``offset TAB timestamp TAB key TAB crc32(value) TAB value NEWLINE``; the
value is the event's JSON, which never contains a raw newline. Guarantees:

1. Append-only: records are never rewritten; offsets are dense from 0 in each partition.
2. Durable on ``commit()``: data and index are fsynced before it returns.
3. Torn writes are repaired on open: a trailing partial line or a line whose CRC does not
   match ends the partition there (it was never committed), as Kafka's log recovery does.
4. One writer per data directory at a time (an exclusive file lock); readers never lock
   and only ever see complete records.
"""

from __future__ import annotations

import bisect
import fcntl
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from streams.topics import partition_for

SEGMENT_NAME = "00000000000000000000"
INDEX_INTERVAL = 4096
_FLUSH_BYTES = 4 << 20
_NO_TS = -(2**63)


class LogError(RuntimeError):
    pass


class CorruptRecord(LogError):
    pass


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    end_offsets: tuple[int, ...]

    @property
    def records(self) -> int:
        return sum(self.end_offsets)


def _parse_line(line: bytes) -> tuple[int, int, bytes, int, bytes]:
    offset, ts, key, crc, value = line.split(b"\t", 4)
    return int(offset), int(ts), key, int(crc, 16), value


class _Index:
    """Sparse index: every INDEX_INTERVAL records, (offset, byte position, max ts before)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offsets: list[int] = [0]
        self.positions: list[int] = [0]
        self.max_ts_before: list[int] = [_NO_TS]
        if path.exists():
            for raw in path.read_bytes().splitlines():
                parts = raw.split()
                if len(parts) != 3:
                    break  # a torn last line: the entries before it stand
                offset, position, max_ts = (int(p) for p in parts)
                if offset <= self.offsets[-1]:
                    continue
                self.offsets.append(offset)
                self.positions.append(position)
                self.max_ts_before.append(max_ts)

    def truncate_to(self, end_offset: int, size: int) -> None:
        """Drop entries that point past the recovered end of the data."""
        while len(self.offsets) > 1 and (
            self.offsets[-1] > end_offset or self.positions[-1] > size
        ):
            self.offsets.pop()
            self.positions.pop()
            self.max_ts_before.pop()

    def seek_offset(self, offset: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.offsets, offset) - 1
        return self.offsets[i], self.positions[i]

    def seek_time(self, timestamp: int) -> tuple[int, int]:
        """Last entry before which no record reached ``timestamp``: scanning from it is exact."""
        i = bisect.bisect_left(self.max_ts_before, timestamp) - 1
        i = max(i, 0)
        return self.offsets[i], self.positions[i]


class _PartitionWriter:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.data_path = directory / f"{SEGMENT_NAME}.log"
        self.index = _Index(directory / f"{SEGMENT_NAME}.index")
        self.next_offset, self.size, self.max_ts = self._recover()
        self.index.truncate_to(self.next_offset, self.size)
        self.index.path.write_bytes(
            b"".join(
                b"%d %d %d\n" % entry
                for entry in zip(
                    self.index.offsets[1:],
                    self.index.positions[1:],
                    self.index.max_ts_before[1:],
                    strict=True,
                )
            )
        )
        self._data: IO[bytes] = open(self.data_path, "ab")  # noqa: SIM115 - closed in close()
        self._index_file: IO[bytes] = open(self.index.path, "ab")  # noqa: SIM115
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._index_pending: list[bytes] = []

    def _recover(self) -> tuple[int, int, int]:
        """Find the end of the valid records; cut off anything after it."""
        if not self.data_path.exists():
            self.data_path.touch()
            return 0, 0, _NO_TS
        offset, position = self.index.offsets[-1], self.index.positions[-1]
        max_ts = self.index.max_ts_before[-1]
        size = self.data_path.stat().st_size
        if position > size:
            offset, position, max_ts = 0, 0, _NO_TS
        with open(self.data_path, "rb") as handle:
            handle.seek(position)
            while True:
                line = handle.readline()
                if not line.endswith(b"\n"):
                    break
                try:
                    got_offset, ts, _key, crc, value = _parse_line(line[:-1])
                except ValueError:
                    break
                if got_offset != offset or zlib.crc32(value) != crc:
                    break
                offset += 1
                position += len(line)
                max_ts = max(max_ts, ts)
        if position < size:
            with open(self.data_path, "r+b") as handle:
                handle.truncate(position)
        return offset, position, max_ts

    def append(self, key: bytes, values: Iterable[tuple[int, bytes]]) -> int:
        """Buffer records; return the offset of the first one."""
        first = self.next_offset
        offset = first
        buffer = self._buffer
        position = self.size + self._buffered
        max_ts = self.max_ts
        added = 0
        for ts, value in values:
            if offset % INDEX_INTERVAL == 0 and offset:
                self._index_pending.append(b"%d %d %d\n" % (offset, position + added, max_ts))
                self.index.offsets.append(offset)
                self.index.positions.append(position + added)
                self.index.max_ts_before.append(max_ts)
            line = b"%d\t%d\t%s\t%08x\t%s\n" % (offset, ts, key, zlib.crc32(value), value)
            buffer.append(line)
            added += len(line)
            if ts > max_ts:
                max_ts = ts
            offset += 1
        self.max_ts = max_ts
        self.next_offset = offset
        self._buffered += added
        if self._buffered >= _FLUSH_BYTES:
            self.flush()
        return first

    def flush(self) -> None:
        if self._buffer:
            self._data.write(b"".join(self._buffer))
            self._buffer.clear()
            self.size += self._buffered
            self._buffered = 0
        self._data.flush()
        if self._index_pending:
            self._index_file.write(b"".join(self._index_pending))
            self._index_pending.clear()
        self._index_file.flush()

    def sync(self) -> None:
        self.flush()
        os.fsync(self._data.fileno())
        os.fsync(self._index_file.fileno())

    def close(self) -> None:
        self.flush()
        self._data.close()
        self._index_file.close()


class EmbeddedLog:
    """Topics with partitions and offsets under one directory. See the module docstring."""

    def __init__(self, root: Path, default_partitions: int = 1) -> None:
        self.root = Path(root)
        self.default_partitions = default_partitions
        self._writers: dict[tuple[str, int], _PartitionWriter] = {}
        self._partitions: dict[str, int] = {}
        self._lock: IO[bytes] | None = None

    # -- topics -------------------------------------------------------------------------------

    def _topic_dir(self, topic: str) -> Path:
        return self.root / topic

    def partitions(self, topic: str) -> int:
        known = self._partitions.get(topic)
        if known is not None:
            return known
        meta = self._topic_dir(topic) / "topic.json"
        if not meta.exists():
            raise LogError(f"unknown topic {topic!r}")
        count = int(orjson.loads(meta.read_bytes())["partitions"])
        self._partitions[topic] = count
        return count

    def create_topic(self, topic: str, partitions: int | None = None) -> int:
        """Create ``topic`` if it does not exist; return its partition count."""
        try:
            return self.partitions(topic)
        except LogError:
            pass
        count = partitions or self.default_partitions
        directory = self._topic_dir(topic)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "topic.json.tmp"
        tmp.write_bytes(orjson.dumps({"name": topic, "partitions": count}))
        os.replace(tmp, directory / "topic.json")
        self._partitions[topic] = count
        return count

    def topic_names(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/topic.json"))

    def describe(self) -> list[TopicInfo]:
        return [
            TopicInfo(
                name,
                self.partitions(name),
                tuple(self.end_offset(name, p) for p in range(self.partitions(name))),
            )
            for name in self.topic_names()
        ]

    def has_partition(self, topic: str, partition: int) -> bool:
        try:
            return 0 <= partition < self.partitions(topic)
        except LogError:
            return False

    # -- writing ------------------------------------------------------------------------------

    def open_for_writing(self) -> None:
        """Take the directory's writer lock; fails fast if another process holds it."""
        if self._lock is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        lock = open(self.root / ".writer.lock", "wb")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise LogError(
                f"the log at {self.root} is being written by another process; "
                "wait for it or use another data directory"
            ) from None
        self._lock = lock

    def _writer(self, topic: str, partition: int) -> _PartitionWriter:
        writer = self._writers.get((topic, partition))
        if writer is None:
            if self._lock is None:
                self.open_for_writing()
            writer = _PartitionWriter(self._topic_dir(topic) / str(partition))
            self._writers[(topic, partition)] = writer
        return writer

    def append(self, topic: str, key: str, records: Iterable[tuple[int, bytes]]) -> tuple[int, int]:
        """Append ``(timestamp, value)`` records under ``key``; return (partition, first offset)."""
        partition = partition_for(key, self.partitions(topic))
        first = self._writer(topic, partition).append(key.encode(), records)
        return partition, first

    def commit(self) -> None:
        """Make everything appended so far durable."""
        for writer in self._writers.values():
            writer.sync()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> EmbeddedLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------

    def _segment(self, topic: str, partition: int) -> Path:
        if not self.has_partition(topic, partition):
            raise LogError(f"unknown partition {topic}/{partition}")
        return self._topic_dir(topic) / str(partition) / f"{SEGMENT_NAME}.log"

    def end_offset(self, topic: str, partition: int) -> int:
        """The offset the next record will get (the count of complete records)."""
        writer = self._writers.get((topic, partition))
        if writer is not None:
            return writer.next_offset
        path = self._segment(topic, partition)
        if not path.exists():
            return 0
        index = _Index(path.with_suffix(".index"))
        offset, position = index.offsets[-1], index.positions[-1]
        with open(path, "rb") as handle:
            handle.seek(position)
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                offset += 1
        return offset

    def read(
        self,
        topic: str,
        partition: int,
        from_offset: int = 0,
        to_offset: int | None = None,
        *,
        verify: bool = True,
    ) -> Iterator[Record]:
        """Records with ``from_offset <= offset < to_offset`` (to the end when None)."""
        writer = self._writers.get((topic, partition))
        if writer is not None:
            writer.flush()
        path = self._segment(topic, partition)
        if not path.exists():
            return
        index = _Index(path.with_suffix(".index"))
        offset, position = index.seek_offset(max(from_offset, 0))
        yield from self._scan(topic, partition, path, offset, position, from_offset, to_offset,
                              verify)

    def _scan(
        self,
        topic: str,
        partition: int,
        path: Path,
        offset: int,
        position: int,
        from_offset: int,
        to_offset: int | None,
        verify: bool,
    ) -> Iterator[Record]:
        with open(path, "rb") as handle:
            handle.seek(position)
            for line in handle:
                if not line.endswith(b"\n"):
                    return  # an incomplete record is not yet part of the log
                if to_offset is not None and offset >= to_offset:
                    return
                if offset >= from_offset:
                    got, ts, key, crc, value = _parse_line(line[:-1])
                    if got != offset or (verify and zlib.crc32(value) != crc):
                        raise CorruptRecord(f"{topic}/{partition} offset {offset} is corrupt")
                    yield Record(topic, partition, offset, ts, key.decode(), value)
                offset += 1

    def offset_for_time(self, topic: str, partition: int, timestamp: int) -> int:
        """The first offset whose record time is >= ``timestamp`` (the end if none is)."""
        path = self._segment(topic, partition)
        if not path.exists():
            return 0
        index = _Index(path.with_suffix(".index"))
        offset, position = index.seek_time(timestamp)
        for record in self._scan(topic, partition, path, offset, position, offset, None, False):
            if record.timestamp >= timestamp:
                return record.offset
        return self.end_offset(topic, partition)
