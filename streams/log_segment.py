"""One partition's segment on disk: record batches, the sparse index, and the writer.

A batch is a header line ``B base_offset count max_timestamp crc32 payload_length key``
followed by its payload: ``count`` lines of ``timestamp TAB value``; the CRC covers the
payload. The index file has a line ``offset position max-timestamp-before`` about every
INDEX_INTERVAL records (and at least every INDEX_BATCHES batches). What is committed is
decided by the log's commit record (``streams.log_commit``), not by the segment itself.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import zlib
from pathlib import Path
from typing import IO

from streams.log_commit import Committed, fsync_directory
from streams.log_port import CorruptLog

logger = logging.getLogger("cdb.log")

SEGMENT_NAME = "00000000000000000000"
INDEX_INTERVAL = 4096
# Also an entry every so many batches: a topic written a record at a time (a live run's
# orders and results) would otherwise be scanned header by header from its last entry.
INDEX_BATCHES = 128
_FLUSH_BYTES = 4 << 20
_NO_TS = -(2**63)


class BatchHeader:
    __slots__ = ("base", "count", "crc", "key", "length", "max_ts", "size")

    def __init__(self, line: bytes) -> None:
        tag, base, count, max_ts, crc, length, key = line.rstrip(b"\n").split(b" ", 6)
        if tag != b"B":
            raise ValueError("not a batch header")
        self.base, self.count, self.max_ts = int(base), int(count), int(max_ts)
        self.crc, self.length, self.key = int(crc, 16), int(length), key
        if self.base < 0 or self.count < 1 or self.length < 0:
            raise ValueError("impossible batch header")
        self.size = len(line) + self.length  # header plus payload, in bytes


def records_in(payload: bytes) -> int | None:
    """How many records a payload holds, or None if it does not end with a newline."""
    if payload and not payload.endswith(b"\n"):
        return None
    return payload.count(b"\n")


class Index:
    """Sparse index: every INDEX_INTERVAL records or INDEX_BATCHES batches, (offset, byte
    position, max ts before). It is derived data: an entry that does not point at the
    batch it names is ignored and the segment scanned from its start instead."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offsets: list[int] = [0]
        self.positions: list[int] = [0]
        self.max_ts_before: list[int] = [_NO_TS]
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        for line in raw.splitlines():
            parts = line.split()
            try:
                offset, position, max_ts = (int(p) for p in parts)
            except ValueError:
                break  # a torn last line (or damage): the entries before it stand
            if offset <= self.offsets[-1] or position <= self.positions[-1]:
                continue
            self.offsets.append(offset)
            self.positions.append(position)
            self.max_ts_before.append(max_ts)

    def truncate_to(self, end_offset: int, size: int) -> None:
        """Drop entries that point at or past the end of the data."""
        while len(self.offsets) > 1 and (
            self.offsets[-1] >= end_offset or self.positions[-1] >= size
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

    def lines(self) -> bytes:
        return b"".join(
            b"%d %d %d\n" % entry
            for entry in zip(
                self.offsets[1:], self.positions[1:], self.max_ts_before[1:], strict=True
            )
        )


class Place:
    """Where a reader is in one segment, for messages that name it."""

    __slots__ = ("partition", "path", "topic")

    def __init__(self, topic: str, partition: int, path: Path) -> None:
        self.topic, self.partition, self.path = topic, partition, path

    def corrupt(self, offset: int, position: int, what: str) -> CorruptLog:
        return CorruptLog(
            f"the log is corrupt in {self.topic}/{self.partition} ({self.path}) at offset "
            f"{offset} (byte {position}): {what}; run `cdb log verify` for a full check"
        )


def header_at(handle: IO[bytes], position: int, bound: int) -> BatchHeader | None:
    """The batch header at ``position``, or None if there is no whole, valid one."""
    handle.seek(position)
    line = handle.readline(min(512, bound - position))
    if not line.endswith(b"\n"):
        return None
    try:
        return BatchHeader(line)
    except ValueError:
        return None


def legacy_end(path: Path) -> tuple[Committed, int]:
    """The committed end of a segment written before the commit record existed, by the
    old rule: every complete batch with a matching CRC up to the first damaged one at the
    end of the file. Also how many bytes follow it. A damaged batch with more data after
    it is corruption, not an end."""
    index = Index(path.with_suffix(".index"))
    size = path.stat().st_size
    index.truncate_to(2**62, size)
    offset, position = index.offsets[-1], index.positions[-1]
    max_ts, last = index.max_ts_before[-1], 0
    place = Place(path.parent.parent.name, int(path.parent.name), path)
    with open(path, "rb") as handle:
        header = header_at(handle, position, size)
        if position and (header is None or header.base != offset):
            offset, position, max_ts = 0, 0, _NO_TS  # an index entry that does not hold
        while position < size:
            header = header_at(handle, position, size)
            if header is None or header.base != offset:
                break
            payload = handle.read(header.length)
            if len(payload) != header.length:
                break
            if zlib.crc32(payload) != header.crc or records_in(payload) != header.count:
                if position + header.size < size:
                    raise place.corrupt(offset, position, "a damaged batch with data after it")
                break
            last = position
            offset += header.count
            position += header.size
            max_ts = max(max_ts, header.max_ts)
    return Committed(offset, position, last, max_ts), size - position


class PartitionWriter:
    def __init__(self, directory: Path, committed: Committed, place: Place) -> None:
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        self.data_path = directory / f"{SEGMENT_NAME}.log"
        self.index = Index(directory / f"{SEGMENT_NAME}.index")
        self.dropped = self._recover(committed, place)
        self.next_offset, self.size = committed.next_offset, committed.size
        self.last, self.max_ts = committed.last_batch, committed.max_timestamp
        self.index.truncate_to(self.next_offset, self.size)
        self.index.path.write_bytes(self.index.lines())
        self._data: IO[bytes] = open(self.data_path, "ab")  # noqa: SIM115 - closed in close()
        self._index_file: IO[bytes] = open(self.index.path, "ab")  # noqa: SIM115
        if created:
            fsync_directory(directory)
            fsync_directory(directory.parent)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._index_pending: list[bytes] = []
        self._next_index_offset = self.index.offsets[-1] + INDEX_INTERVAL
        self._batches_since_index = 0

    def _recover(self, committed: Committed, place: Place) -> int:
        """Check that the committed data is all there and its last batch intact; drop what
        follows it (never committed). Returns the bytes dropped."""
        try:
            size = self.data_path.stat().st_size
        except FileNotFoundError:
            if committed.size:
                raise place.corrupt(
                    committed.next_offset,
                    0,
                    f"the segment is missing ({committed.size} committed bytes)",
                ) from None
            self.data_path.touch()
            return 0
        if size < committed.size:
            raise place.corrupt(
                committed.next_offset,
                size,
                f"the segment has {size} bytes but {committed.size} were committed",
            )
        if committed.size:
            with open(self.data_path, "rb") as handle:
                header = header_at(handle, committed.last_batch, committed.size)
                payload = handle.read(header.length) if header is not None else b""
            if (
                header is None
                or header.base + header.count != committed.next_offset
                or committed.last_batch + header.size != committed.size
                or zlib.crc32(payload) != header.crc
            ):
                raise place.corrupt(
                    committed.next_offset - (header.count if header else 0),
                    committed.last_batch,
                    "the last committed batch is damaged",
                )
        if size > committed.size:
            with open(self.data_path, "r+b") as handle:
                handle.truncate(committed.size)
                os.fsync(handle.fileno())
        return size - committed.size

    def state(self) -> Committed:
        """Where the data written and flushed so far ends."""
        return Committed(self.next_offset, self.size, self.last, self.max_ts)

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
        self.last = position
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
        """Let go of the files. Buffered records are dropped: they were never committed."""
        self._buffer.clear()
        self._index_pending.clear()
        for handle in (self._data, self._index_file):
            with contextlib.suppress(OSError):
                handle.close()


class SegmentScan:
    """What a full scan of a segment's first ``bound`` bytes found."""

    __slots__ = ("batches", "last_batch", "max_ts", "next_offset", "problem", "valid_size")

    def __init__(self) -> None:
        self.next_offset = 0  # after the last valid batch
        self.valid_size = 0  # bytes of valid batches from the start
        self.last_batch = 0
        self.max_ts = _NO_TS
        self.problem: str | None = None  # the first thing wrong, at next_offset/valid_size
        self.batches: list[tuple[int, int, int]] = []  # (base, position, max ts before)

    def committed(self) -> Committed:
        """The valid prefix as a commit point."""
        return Committed(self.next_offset, self.valid_size, self.last_batch, self.max_ts)


def scan_segment(path: Path, bound: int) -> SegmentScan:
    """Check every batch of ``path`` up to byte ``bound``: header, dense offsets, record
    count and CRC. Stops at the first problem, which it describes; never raises for one."""
    scan = SegmentScan()
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        if bound:
            scan.problem = f"the segment is missing ({bound} bytes committed)"
        return scan
    with handle:
        size = os.fstat(handle.fileno()).st_size
        limit = min(size, bound)
        position = 0
        while position < limit:
            header = header_at(handle, position, limit)
            if header is None:
                scan.problem = "no valid batch header"
                break
            if header.base != scan.next_offset:
                scan.problem = f"the batch there starts at offset {header.base}"
                break
            if position + header.size > limit:
                scan.problem = "a batch runs past the committed end"
                break
            payload = handle.read(header.length)
            if zlib.crc32(payload) != header.crc:
                scan.problem = "the batch's checksum does not match"
                break
            if records_in(payload) != header.count:
                scan.problem = f"the batch holds {records_in(payload)} records, not {header.count}"
                break
            scan.batches.append((header.base, position, scan.max_ts))
            scan.last_batch = position
            scan.next_offset = header.base + header.count
            scan.max_ts = max(scan.max_ts, header.max_ts)
            position += header.size
            scan.valid_size = position
        if scan.problem is None and size < bound:
            scan.problem = f"the segment has {size} bytes but {bound} were committed"
    return scan


def index_problem(index: Index, scan: SegmentScan) -> str | None:
    """Whether the index points anywhere but at the batches the scan found."""
    at = {position: (base, max_before) for base, position, max_before in scan.batches}
    for offset, position, max_before in zip(
        index.offsets[1:], index.positions[1:], index.max_ts_before[1:], strict=True
    ):
        if position >= scan.valid_size:
            continue  # past the valid data: dropped with it
        if at.get(position) != (offset, max_before):
            return f"its entry for offset {offset} does not point at that batch"
    return None


def rebuild_index(index: Index, scan: SegmentScan) -> None:
    """Write the index the writer would have written for the scanned batches."""
    index.offsets, index.positions, index.max_ts_before = [0], [0], [_NO_TS]
    next_entry, batches_since = INDEX_INTERVAL, 0
    for base, position, max_before in scan.batches:
        batches_since += 1
        if base >= next_entry or batches_since > INDEX_BATCHES:
            batches_since = 0
            index.offsets.append(base)
            index.positions.append(position)
            index.max_ts_before.append(max_before)
            next_entry = base + INDEX_INTERVAL
    index.path.write_bytes(index.lines())


# -- reading committed batches ------------------------------------------------------------


def open_committed(place: Place, end: int, bound: int) -> IO[bytes]:
    """The segment, open for reading, if it holds at least the ``bound`` committed bytes."""
    try:
        handle = open(place.path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise place.corrupt(end, 0, f"the segment is missing ({bound} bytes committed)") from None
    on_disk = os.fstat(handle.fileno()).st_size
    if on_disk < bound:
        handle.close()
        raise place.corrupt(
            end, on_disk, f"the segment has {on_disk} bytes but {bound} were committed"
        )
    return handle


def reading_start(
    handle: IO[bytes],
    place: Place,
    end: int,
    bound: int,
    from_offset: int,
    from_time: int | None,
) -> tuple[int, int]:
    """(offset, byte position) of the batch a read starts from: the index's entry for
    ``from_offset`` (or for ``from_time``), or the segment's start if the entry does not
    point at the batch it names (a damaged index is read around, never trusted)."""
    index = Index(place.path.with_suffix(".index"))
    index.truncate_to(end, bound)
    if from_time is None:
        offset, position = index.seek_offset(from_offset)
    else:
        offset, position = index.seek_time(from_time)
    if position:
        header = header_at(handle, position, bound)
        if header is None or header.base != offset:
            logger.warning(
                "cdb: the index of %s/%d is damaged; reading without it",
                place.topic,
                place.partition,
            )
            return 0, 0
    return offset, position


def committed_header(
    handle: IO[bytes], place: Place, offset: int, position: int, bound: int
) -> BatchHeader:
    """The header of the committed batch that must be at ``position``, with ``offset``."""
    header = header_at(handle, position, bound)
    if header is None:
        raise place.corrupt(offset, position, "no valid batch header")
    if header.base != offset:
        raise place.corrupt(offset, position, f"the batch there starts at offset {header.base}")
    if position + header.size > bound:
        raise place.corrupt(offset, position, "a batch runs past the committed end")
    return header


def batch_lines(
    handle: IO[bytes], place: Place, header: BatchHeader, position: int, verify: bool
) -> list[bytes]:
    """The batch's records (``timestamp TAB value`` lines), read right after its header
    and checked whole: its CRC (with ``verify``) and its record count."""
    payload = handle.read(header.length)
    if verify and zlib.crc32(payload) != header.crc:
        raise place.corrupt(header.base, position, "the batch's checksum does not match")
    lines = payload.split(b"\n")
    if lines.pop() != b"" or len(lines) != header.count:
        raise place.corrupt(
            header.base, position, f"the batch holds {len(lines)} records, not {header.count}"
        )
    return lines
