"""The embedded log: Kafka-style topics, partitions and offsets in files, no server.

Layout under the log directory::

    COMMIT                                     where each partition's committed data ends
    <topic>/topic.json                         partition count
    <topic>/<partition>/00000000000000000000.log     records, one per line
    <topic>/<partition>/00000000000000000000.index   sparse offset/position/time index

Records are written in batches, as Kafka does. A batch is a header line
``B base_offset count max_timestamp crc32 payload_length key`` followed by its payload:
``count`` lines of ``timestamp TAB value``, where the value is the event's JSON (which never
contains a raw newline) and the CRC covers the payload. Records of one batch share a key.
Guarantees:

1. Append-only: committed records are never rewritten, cut or skipped; offsets are dense
   from 0 in each partition.
2. Durable and visible on ``commit()``: data and index are fsynced, then the commit record
   (``streams.log_commit``) is replaced atomically. One commit covers every partition
   written since the last one, so a run's events appear in all their topics together.
3. Readers see committed records only (a writer also sees its own). Committed data that
   cannot be read back exactly stops readers and writers with ``CorruptLog``, naming the
   topic, partition, file and offset; it is never taken for the end of the log.
4. A write that was never committed (a crash, a kill) is dropped by the next writer
   before it appends, and only that: nothing before the commit point is touched.
5. One writer per data directory at a time (an exclusive lock on ``.writer.lock``, which
   names its holder). Only the process that took it holds it: forked helpers let go of it.
   A lock still held by the leftovers of a killed writer is waited for briefly, not
   reported as a live writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from streams.log_commit import (
    EMPTY,
    CommitRecord,
    Committed,
    Key,
    fsync_directory,
    partitions_on_disk,
)
from streams.log_port import CorruptLog, CorruptRecord, LogError, Record, TopicInfo
from streams.log_segment import (
    SEGMENT_NAME,
    PartitionWriter,
    Place,
    batch_lines,
    committed_header,
    legacy_end,
    open_committed,
    reading_start,
)
from streams.topics import partition_for

__all__ = ["CorruptLog", "CorruptRecord", "EmbeddedLog", "LogError", "Record", "TopicInfo"]

logger = logging.getLogger("cdb.log")

_KEY = re.compile(r"[A-Za-z0-9._:\-]{1,200}")
LOCK_FILE = ".writer.lock"
# How long a new writer waits for the leftovers of a killed one to let go of the lock.
LEFTOVER_WAIT_S = 10.0

# Every log of this process that holds the writer lock, so a forked child can let go of
# its copy of the lock (see ``_release_locks_in_child``).
_LOCK_HOLDERS: weakref.WeakSet[EmbeddedLog] = weakref.WeakSet()


def _release_locks_in_child() -> None:
    for log in list(_LOCK_HOLDERS):
        log._forget_lock()


os.register_at_fork(after_in_child=_release_locks_in_child)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process nobody has reaped yet is a zombie: it holds nothing
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


class EmbeddedLog:
    """Topics with partitions and offsets under one directory. See the module docstring."""

    # A forked process can go on reading through this object: reads open their own files.
    readable_after_fork = True
    exact_end_offsets = True
    brokered = False

    def __init__(self, root: Path, default_partitions: int = 1, *, lock: bool = True) -> None:
        """``lock=False`` is for a helper process of the lock holder: it writes partitions
        the holder leaves alone, under the holder's lock, and hands their ends to the
        holder (``positions``), whose commit covers them (``adopt``)."""
        self.root = Path(root)
        self.identity = f"embedded:{self.root.resolve()}"
        self._take_lock = lock
        self.default_partitions = default_partitions
        self._writers: dict[Key, PartitionWriter] = {}
        self._partitions: dict[str, int] = {}
        self._lock: IO[bytes] | None = None
        self._commit = CommitRecord(self.root)
        self._adopted: dict[Key, Committed] = {}
        self._failed: str | None = None
        self._legacy_ends: dict[Key, tuple[int, Committed]] = {}

    # -- topics -------------------------------------------------------------------------------

    def _topic_dir(self, topic: str) -> Path:
        return self.root / topic

    def partitions(self, topic: str) -> int:
        known = self._partitions.get(topic)
        if known is not None:
            return known
        meta = self._topic_dir(topic) / "topic.json"
        try:
            raw = meta.read_bytes()
        except FileNotFoundError:
            committed = self._commit.entries() or {}
            if any(key[0] == topic for key in committed):
                raise CorruptLog(
                    f"the log is corrupt: topic {topic} has committed records but its "
                    f"metadata {meta} is missing; run `cdb log verify`"
                ) from None
            raise LogError(f"unknown topic {topic!r}") from None
        except OSError as exc:
            raise LogError(f"cannot read {meta}: {exc.strerror or exc}") from None
        try:
            count = orjson.loads(raw)["partitions"]
            if type(count) is not int or count < 1:
                raise ValueError(f"partitions {count!r}")
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
            raise CorruptLog(
                f"the log is corrupt: the metadata of topic {topic} ({meta}) is damaged "
                f"({exc}); run `cdb log verify`"
            ) from None
        beyond = [p for (t, p) in (self._commit.entries() or {}) if t == topic and p >= count]
        if beyond:
            raise CorruptLog(
                f"the log is corrupt: {meta} says {count} partition(s) but partition "
                f"{min(beyond)} of {topic} has committed records; run `cdb log verify`"
            )
        self._partitions[topic] = count
        return count

    def create_topic(self, topic: str, partitions: int | None = None) -> int:
        """Create ``topic`` if it does not exist; return its partition count."""
        try:
            return self.partitions(topic)
        except CorruptLog:
            raise
        except LogError:
            pass
        count = partitions or self.default_partitions
        directory = self._topic_dir(topic)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "topic.json.tmp"
        tmp.write_bytes(orjson.dumps({"name": topic, "partitions": count}))
        os.replace(tmp, directory / "topic.json")
        fsync_directory(directory)
        fsync_directory(self.root)
        self._partitions[topic] = count
        return count

    def topic_names(self) -> list[str]:
        if not self.root.exists():
            return []
        names = {p.parent.name for p in self.root.glob("*/topic.json")}
        names.update(topic for topic, _ in self._commit.entries() or {})
        return sorted(names)

    # -- writing ------------------------------------------------------------------------------

    def open_for_writing(self) -> None:
        """Take the directory's writer lock and settle the commit record (dropping what a
        crashed writer left uncommitted happens per partition, when it is first written)."""
        if self._lock is not None or not self._take_lock:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = open(self.root / LOCK_FILE, "a+b")  # noqa: SIM115 - held until close()
        except OSError as exc:
            raise LogError(f"cannot write the log at {self.root}: {exc.strerror or exc}") from None
        try:
            self._acquire(lock)
            self._lock = lock
            _LOCK_HOLDERS.add(self)
            self._settle_commit_record()
        except BaseException:
            self._forget_lock()
            lock.close()
            raise

    def _acquire(self, lock: IO[bytes]) -> None:
        deadline = time.monotonic() + LEFTOVER_WAIT_S
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self._lock_holder()
                alive = holder is None or _process_alive(holder)
                if alive or time.monotonic() > deadline:
                    who = "" if holder is None else f" (pid {holder})"
                    left = "" if alive else ", which has exited but left processes behind"
                    raise LogError(
                        f"the log at {self.root} is being written by another process{who}"
                        f"{left}; wait for it or use another data directory"
                    ) from None
                # The writer is dead: what still holds its lock are its helpers, exiting.
                time.sleep(0.05)
        lock.seek(0)
        lock.truncate()
        lock.write(b"%d\n" % os.getpid())
        lock.flush()

    def _lock_holder(self) -> int | None:
        try:
            text = (self.root / LOCK_FILE).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def _forget_lock(self) -> None:
        """Close this process's copy of the lock without unlocking it (a forked child's
        copy: the parent keeps holding the lock)."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.close()
            self._lock = None
        _LOCK_HOLDERS.discard(self)

    def _settle_commit_record(self) -> None:
        """Make sure the log has a commit record: a new log gets an empty one before any
        data is written; a log from before the record existed gets one from its data."""
        if self._commit.exists():
            self._commit.entries()  # a damaged record stops the writer here
            return
        entries: dict[Key, Committed] = {}
        for key in partitions_on_disk(self.root):
            segment = self._segment_path(*key)
            if segment.exists():
                entries[key] = legacy_end(segment)[0]
        self._commit.write(entries)

    def _writer(self, topic: str, partition: int) -> PartitionWriter:
        writer = self._writers.get((topic, partition))
        if writer is None:
            if self._failed is not None:
                raise LogError(self._failed)
            if self._lock is None and self._take_lock:
                self.open_for_writing()
            place = Place(topic, partition, self._segment_path(topic, partition))
            committed = self._commit.get((topic, partition)) or EMPTY
            try:
                writer = PartitionWriter(self._topic_dir(topic) / str(partition), committed, place)
            except OSError as exc:
                raise self._write_failed(exc) from None
            if writer.dropped:
                logger.warning(
                    "cdb: dropped %d bytes never committed at the end of %s/%d "
                    "(a write that did not finish)",
                    writer.dropped,
                    topic,
                    partition,
                )
            self._writers[(topic, partition)] = writer
        return writer

    def _write_failed(self, exc: OSError) -> LogError:
        """After a failed write nothing more is written: the log keeps its last commit."""
        self._failed = f"cannot write the log at {self.root}: {exc.strerror or exc}"
        return LogError(self._failed)

    def append(self, topic: str, key: str, records: list[tuple[int, bytes]]) -> tuple[int, int]:
        """Append ``(timestamp, value)`` records under ``key`` as one batch.

        Returns (partition, offset of the first record).
        """
        if not _KEY.fullmatch(key):
            raise LogError(f"invalid key {key!r}: use letters, digits and . _ : - only")
        partition = partition_for(key, self.partitions(topic))
        writer = self._writer(topic, partition)
        try:
            first = writer.append(key.encode(), records)
        except OSError as exc:
            raise self._write_failed(exc) from None
        return partition, first

    def adopt(self, positions: Mapping[Key, Committed]) -> None:
        """Partitions a helper process wrote (and synced): the next commit covers them."""
        self._adopted.update(positions)

    def positions(self) -> dict[Key, Committed]:
        """Where this process's writes end, per partition (a helper hands them over)."""
        return {key: writer.state() for key, writer in self._writers.items()}

    def commit(self) -> None:
        """Make everything appended so far durable, then visible in one step."""
        if self._failed is not None:
            raise LogError(self._failed)
        try:
            for writer in self._writers.values():
                writer.sync()
            if not self._take_lock:
                return  # a helper: the lock holder's commit covers what it wrote
            entries = dict(self._commit.entries() or {})
            entries.update((key, writer.state()) for key, writer in self._writers.items())
            entries.update(self._adopted)
            self._adopted.clear()
            self._commit.write(entries)
        except OSError as exc:
            raise self._write_failed(exc) from None

    def close(self) -> None:
        """Close every file and the lock. What was not committed is left for the next
        writer to drop."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._forget_lock()

    def __enter__(self) -> EmbeddedLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------

    def _segment_path(self, topic: str, partition: int) -> Path:
        return self._topic_dir(topic) / str(partition) / f"{SEGMENT_NAME}.log"

    def _segment(self, topic: str, partition: int) -> Path:
        if not 0 <= partition < self.partitions(topic):  # raises for an unknown topic
            raise LogError(f"unknown partition {topic}/{partition}")
        return self._segment_path(topic, partition)

    def _bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """(end offset, size in bytes) of what this process may read of a partition: what
        is committed, or what it wrote itself."""
        path = self._segment(topic, partition)
        writer = self._writers.get((topic, partition))
        if writer is not None:
            writer.flush()
            return writer.next_offset, writer.size
        committed = self._adopted.get((topic, partition)) or self._commit.get((topic, partition))
        if committed is None:  # a log from before the commit record
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return 0, 0
            cached = self._legacy_ends.get((topic, partition))
            if cached is None or cached[0] != size:
                cached = (size, legacy_end(path)[0])
                self._legacy_ends[(topic, partition)] = cached
            committed = cached[1]
        return committed.next_offset, committed.size

    def end_offset(self, topic: str, partition: int) -> int:
        """The offset the next record will get (the count of committed records, or of all
        this process wrote to the partition)."""
        writer = self._writers.get((topic, partition))
        if writer is not None:
            return writer.next_offset
        end, size = self._bounds(topic, partition)
        if size:
            path = self._segment_path(topic, partition)
            place = Place(topic, partition, path)
            try:
                on_disk = path.stat().st_size
            except FileNotFoundError:
                raise place.corrupt(
                    end, 0, f"the segment is missing ({size} bytes committed)"
                ) from None
            if on_disk < size:
                raise place.corrupt(
                    end, on_disk, f"the segment has {on_disk} bytes but {size} were committed"
                )
        return end

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
    ) -> Iterator[tuple[str, int, list[bytes]]]:
        """Per stored batch in the range: its key, the first offset in the range, and the
        lines (``timestamp TAB value``) in the range. Every batch passed on the way is
        checked to be where the one before it ends, with the next offset; every batch read
        is checked whole (its CRC with ``verify``, and its record count)."""
        end, bound = self._bounds(topic, partition)
        from_offset = max(from_offset, 0)
        if bound == 0 or from_offset >= end or (to_offset is not None and to_offset <= from_offset):
            return
        place = Place(topic, partition, self._segment_path(topic, partition))
        with open_committed(place, end, bound) as handle:
            offset, position = reading_start(handle, place, end, bound, from_offset, from_time)
            while position < bound:
                header = committed_header(handle, place, offset, position, bound)
                batch_end = header.base + header.count
                if batch_end <= from_offset or (
                    from_time is not None and header.max_ts < from_time
                ):
                    position += header.size  # skipped without reading the payload
                    offset = batch_end
                    continue
                if to_offset is not None and header.base >= to_offset:
                    return
                lines = batch_lines(handle, place, header, position, verify)
                first = max(from_offset, header.base)
                stop = batch_end if to_offset is None else min(batch_end, to_offset)
                if first > header.base or stop < batch_end:
                    lines = lines[first - header.base : stop - header.base]
                yield header.key.decode(), first, lines
                position += header.size
                offset = batch_end
            if offset != end:
                raise place.corrupt(
                    offset, position, f"the segment ends at offset {offset}, not {end}"
                )

    def offset_for_time(self, topic: str, partition: int, timestamp: int) -> int:
        """The first offset whose record time is >= ``timestamp`` (the end if none is)."""
        batches = self._lines(topic, partition, 0, None, False, from_time=timestamp)
        for _key, first, lines in batches:
            for at, line in enumerate(lines, first):
                if int(line.split(b"\t", 1)[0]) >= timestamp:
                    return at
        return self.end_offset(topic, partition)
