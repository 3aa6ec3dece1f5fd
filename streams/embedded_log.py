"""The embedded log: Kafka-style topics, partitions and offsets in files, no server.

Layout under the log directory::

    <topic>/topic.json                         partition count
    <topic>/<partition>/00000000000000000000.log     records, one per line
    <topic>/<partition>/00000000000000000000.index   sparse offset/position/time index

Records are written in batches, as Kafka does. A batch is a header line
``B base_offset count max_timestamp crc32 payload_length key`` followed by its payload:
``count`` lines of ``timestamp TAB value``, where the value is the event's JSON (which never
contains a raw newline) and the CRC covers the payload. Records of one batch share a key.
Guarantees:

1. Append-only: records are never rewritten; offsets are dense from 0 in each partition.
2. Durable on ``commit()``: data and index are fsynced before it returns.
3. Torn writes are repaired on open: a trailing partial batch, or one whose CRC does not
   match, ends the partition there (it was never committed), as Kafka's log recovery does.
4. One writer per data directory at a time (an exclusive file lock); readers never lock
   and only ever see complete records.
"""

from __future__ import annotations

import bisect
import fcntl
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from streams.log_port import CorruptRecord, LogError, Record, TopicInfo
from streams.topics import partition_for

__all__ = ["CorruptRecord", "EmbeddedLog", "LogError", "Record", "TopicInfo"]

SEGMENT_NAME = "00000000000000000000"
INDEX_INTERVAL = 4096
# Also an entry every so many batches: a topic written a record at a time (a live run's
# orders and results) would otherwise be scanned header by header from its last entry.
INDEX_BATCHES = 128
_FLUSH_BYTES = 4 << 20
_NO_TS = -(2**63)
_KEY = re.compile(r"[A-Za-z0-9._:\-]{1,200}")


class _BatchHeader:
    __slots__ = ("base", "count", "crc", "key", "length", "max_ts", "size")

    def __init__(self, line: bytes) -> None:
        tag, base, count, max_ts, crc, length, key = line.rstrip(b"\n").split(b" ", 6)
        if tag != b"B":
            raise ValueError("not a batch header")
        self.base, self.count, self.max_ts = int(base), int(count), int(max_ts)
        self.crc, self.length, self.key = int(crc, 16), int(length), key
        self.size = len(line) + self.length  # header plus payload, in bytes


def _batches(handle: IO[bytes]) -> Iterator[tuple[_BatchHeader, int]]:
    """Complete, well-formed batch headers from the handle's position, with their positions.

    The caller either reads the payload (``handle.read(header.length)``) or leaves it; the
    next iteration seeks past it either way. Stops at the first incomplete or malformed one.
    """
    position = handle.tell()
    while True:
        handle.seek(position)
        line = handle.readline()
        if not line.endswith(b"\n"):
            return
        try:
            header = _BatchHeader(line)
        except ValueError:
            return
        yield header, position
        position += header.size


def _read_payload(handle: IO[bytes], header: _BatchHeader) -> bytes | None:
    payload = handle.read(header.length)
    if len(payload) != header.length:
        return None  # a batch still being written (or torn): not part of the log
    return payload


class _Index:
    """Sparse index: every INDEX_INTERVAL records or INDEX_BATCHES batches, (offset, byte
    position, max ts before)."""

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
        self._next_index_offset = self.index.offsets[-1] + INDEX_INTERVAL
        self._batches_since_index = 0

    def _recover(self) -> tuple[int, int, int]:
        """Find the end of the valid batches; cut off anything after it."""
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
            for header, at in _batches(handle):
                payload = _read_payload(handle, header)
                if (
                    header.base != offset
                    or payload is None
                    or zlib.crc32(payload) != header.crc
                    or payload.count(b"\n") != header.count
                ):
                    break
                offset += header.count
                position = at + header.size
                max_ts = max(max_ts, header.max_ts)
        if position < size:
            with open(self.data_path, "r+b") as handle:
                handle.truncate(position)
        return offset, position, max_ts

    def append(self, key: bytes, records: list[tuple[int, bytes]]) -> int:
        """Buffer one batch of ``(timestamp, value)`` records; return its base offset."""
        base = self.next_offset
        if not records:
            return base
        payload = b"".join([b"%d\t%s\n" % record for record in records])
        batch_max = max(record[0] for record in records)
        header = b"B %d %d %d %08x %d %s\n" % (
            base,
            len(records),
            batch_max,
            zlib.crc32(payload),
            len(payload),
            key,
        )
        position = self.size + self._buffered
        self._batches_since_index += 1
        if base >= self._next_index_offset or self._batches_since_index > INDEX_BATCHES:
            self._batches_since_index = 0
            entry = (base, position, self.max_ts)
            self._index_pending.append(b"%d %d %d\n" % entry)
            self.index.offsets.append(base)
            self.index.positions.append(position)
            self.index.max_ts_before.append(self.max_ts)
            self._next_index_offset = base + INDEX_INTERVAL
        self._buffer.append(header)
        self._buffer.append(payload)
        self._buffered += len(header) + len(payload)
        self.max_ts = max(self.max_ts, batch_max)
        self.next_offset = base + len(records)
        if self._buffered >= _FLUSH_BYTES:
            self.flush()
        return base

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

    # A forked process can go on reading through this object: reads open their own files.
    readable_after_fork = True

    def __init__(self, root: Path, default_partitions: int = 1, *, lock: bool = True) -> None:
        """``lock=False`` is for a helper process of the lock holder: it writes partitions
        the holder leaves alone, under the holder's lock."""
        self.root = Path(root)
        self.identity = f"embedded:{self.root.resolve()}"
        self._take_lock = lock
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
            if self._lock is None and self._take_lock:
                self.open_for_writing()
            writer = _PartitionWriter(self._topic_dir(topic) / str(partition))
            self._writers[(topic, partition)] = writer
        return writer

    def append(self, topic: str, key: str, records: list[tuple[int, bytes]]) -> tuple[int, int]:
        """Append ``(timestamp, value)`` records under ``key`` as one batch.

        Returns (partition, offset of the first record).
        """
        if not _KEY.fullmatch(key):
            raise LogError(f"invalid key {key!r}: use letters, digits and . _ : - only")
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
        if not 0 <= partition < self.partitions(topic):  # raises for an unknown topic
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
        size = path.stat().st_size
        with open(path, "rb") as handle:
            handle.seek(position)
            for header, at in _batches(handle):
                payload = _read_payload(handle, header)
                if at + header.size > size or payload is None:
                    break
                if zlib.crc32(payload) != header.crc and at + header.size >= size:
                    break  # an unfinished final batch, as recovery would see it
                offset = header.base + header.count
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
        for key, first, lines in self._lines(topic, partition, from_offset, to_offset, verify):
            for offset, line in enumerate(lines, first):
                ts, value = line.split(b"\t", 1)
                yield Record(topic, partition, offset, int(ts), key, value)

    def read_values(
        self, topic: str, partition: int, from_offset: int = 0, to_offset: int | None = None
    ) -> Iterator[tuple[str, int, list[bytes]]]:
        """``read`` for a reader of values only, a stored batch at a time: the batch's key,
        the first offset and the values (at consecutive offsets), without a record each."""
        for key, first, lines in self._lines(topic, partition, from_offset, to_offset, True):
            yield key, first, [line.partition(b"\t")[2] for line in lines]

    def _lines(
        self,
        topic: str,
        partition: int,
        from_offset: int,
        to_offset: int | None,
        verify: bool,
        from_time: int | None = None,
        position: int | None = None,
    ) -> Iterator[tuple[str, int, list[bytes]]]:
        """Per stored batch in the range: its key, the first offset in the range, and the
        lines (``timestamp TAB value``) in the range."""
        writer = self._writers.get((topic, partition))
        if writer is not None:
            writer.flush()
        path = self._segment(topic, partition)
        if not path.exists():
            return
        from_offset = max(from_offset, 0)
        if position is None:
            _, position = _Index(path.with_suffix(".index")).seek_offset(from_offset)
        with open(path, "rb") as handle:
            handle.seek(position)
            for header, _at in _batches(handle):
                end = header.base + header.count
                if end <= from_offset or (from_time is not None and header.max_ts < from_time):
                    continue  # skipped without reading the payload
                if to_offset is not None and header.base >= to_offset:
                    return
                payload = _read_payload(handle, header)
                if payload is None:
                    return
                if verify and zlib.crc32(payload) != header.crc:
                    if handle.read(1) == b"":
                        return  # an unfinished final batch: not yet part of the log
                    raise CorruptRecord(
                        f"{topic}/{partition}: batch at offset {header.base} is corrupt"
                    )
                lines = payload.split(b"\n")
                lines.pop()  # after the last newline
                first = max(from_offset, header.base)
                stop = end if to_offset is None else min(end, to_offset)
                if first > header.base or stop < end:
                    lines = lines[first - header.base : stop - header.base]
                yield header.key.decode(), first, lines

    def offset_for_time(self, topic: str, partition: int, timestamp: int) -> int:
        """The first offset whose record time is >= ``timestamp`` (the end if none is)."""
        path = self._segment(topic, partition)
        if not path.exists():
            return 0
        index = _Index(path.with_suffix(".index"))
        offset, position = index.seek_time(timestamp)
        batches = self._lines(
            topic, partition, offset, None, False, from_time=timestamp, position=position
        )
        for _key, first, lines in batches:
            for at, line in enumerate(lines, first):
                if int(line.split(b"\t", 1)[0]) >= timestamp:
                    return at
        return self.end_offset(topic, partition)
