"""The embedded log's commit record: where each partition's committed data ends.

``<log>/COMMIT`` holds, for every partition that has committed records, four numbers: the
next offset (the count of committed records), the committed size of its segment in bytes,
the byte position of its last committed batch, and the newest record time in it. The file
is one JSON line followed by the CRC-32 of that line, and it is only ever replaced whole:
written beside, fsynced, renamed over the old one, and the directory fsynced. So a reader
sees the previous commit or the next one, never a mixture, and one commit covers every
partition a writer touched at once: a run's events in all its topics become visible, and
durable, together.

What the record decides (see ``docs/log.md``):

1. Bytes of a segment before its committed size are committed data. They are never cut,
   rewritten or skipped; if they cannot be read back exactly (a CRC that does not match, a
   malformed header, a gap in the offsets, a file shorter than its committed size, a
   missing file), readers and writers stop with a ``CorruptLog`` error naming the place.
2. Bytes after the committed size were never committed: a write in progress, or one a
   crash cut short. Readers in other processes do not see them; the next writer drops
   them before it appends.

A log written before the record existed has no ``COMMIT`` file. Readers then take every
complete, valid batch up to the first damaged one at the end of a segment as committed
(the old rule); the first writer to open such a log establishes the record from that, once.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import orjson

from streams.log_port import CorruptLog

COMMIT_FILE = "COMMIT"
FORMAT = 1


class Committed(NamedTuple):
    """Where one partition's committed data ends."""

    next_offset: int  # the offset the next record gets: the count of committed records
    size: int  # the committed bytes of the segment
    last_batch: int  # the byte position of the last committed batch (0 when there is none)
    max_timestamp: int  # the newest record time among the committed ones


EMPTY = Committed(0, 0, 0, -(2**63))

Key = tuple[str, int]  # (topic, partition)


def _name(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


def encode(entries: Mapping[Key, Committed]) -> bytes:
    body = orjson.dumps(
        {
            "format": FORMAT,
            "partitions": {_name(key): list(entries[key]) for key in sorted(entries)},
        }
    )
    return body + b"\n%08x\n" % zlib.crc32(body)


def decode(raw: bytes, path: Path) -> dict[Key, Committed]:
    """The entries of a commit record's bytes; ``CorruptLog`` if they are not one whole."""
    body, sep, rest = raw.partition(b"\n")
    damaged = f"the log's commit record {path} is damaged"
    if not sep or rest.strip() != b"%08x" % zlib.crc32(body):
        raise CorruptLog(f"{damaged} (its checksum does not match); run `cdb log verify`")
    try:
        data = orjson.loads(body)
        if data.get("format") != FORMAT:
            raise CorruptLog(
                f"the log's commit record {path} has format {data.get('format')!r}; this "
                f"version of cdb reads format {FORMAT}"
            )
        entries: dict[Key, Committed] = {}
        for name, values in data["partitions"].items():
            topic, _, partition = name.rpartition("/")
            entry = Committed(*(int(v) for v in values))
            if not topic or not partition.isdigit() or min(entry[:3]) < 0:
                raise ValueError(name)
            entries[(topic, int(partition))] = entry
    except CorruptLog:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptLog(f"{damaged} ({exc}); run `cdb log verify`") from None
    return entries


class CommitRecord:
    """The commit record of one log directory, read again whenever the file changes."""

    def __init__(self, root: Path) -> None:
        self.path = root / COMMIT_FILE
        self._seen: tuple[int, int, int] | None = None
        self._entries: dict[Key, Committed] | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def entries(self) -> dict[Key, Committed] | None:
        """The committed end of every partition, or None for a log without a record (one
        written before it existed, or a new log no writer has opened yet)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen = self._entries = None
            return None
        except OSError as exc:
            raise CorruptLog(f"cannot read the log's commit record {self.path}: {exc}") from None
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen or self._entries is None:
            try:
                raw = self.path.read_bytes()
            except OSError as exc:
                raise CorruptLog(
                    f"cannot read the log's commit record {self.path}: {exc}"
                ) from None
            self._entries = decode(raw, self.path)
            self._seen = seen
        return self._entries

    def get(self, key: Key) -> Committed | None:
        """``key``'s committed end (EMPTY if it has none); None without a record."""
        entries = self.entries()
        if entries is None:
            return None
        return entries.get(key, EMPTY)

    def write(self, entries: Mapping[Key, Committed]) -> None:
        """Replace the record by ``entries``, durably and atomically."""
        tmp = self.path.with_name(COMMIT_FILE + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(encode({k: v for k, v in entries.items() if v.size}))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        fsync_directory(self.path.parent)
        self._seen = None


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (a new or renamed file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def partitions_on_disk(root: Path) -> Iterator[Key]:
    """Every (topic, partition) with a directory under ``root``."""
    if not root.is_dir():
        return
    for topic_dir in sorted(root.iterdir()):
        if not topic_dir.is_dir() or topic_dir.name.startswith("."):
            continue
        for part in sorted(topic_dir.iterdir()):
            if part.is_dir() and part.name.isdigit():
                yield topic_dir.name, int(part.name)
