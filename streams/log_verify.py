"""Checking a whole embedded log (``cdb log verify``) and repairing it (``cdb log repair``).

``verify_log`` reads every committed byte: the commit record, each topic's metadata, and in
every partition each batch's header, offsets, record count and CRC, and the index. It
reports what is wrong, where, and what ``repair`` could do about it; it changes nothing.

``repair_log`` takes the writer lock and fixes what can be fixed without losing a committed
record: it rebuilds a damaged index, restores topic metadata from the partitions on disk,
and moves bytes that were never committed into the quarantine. Committed data that is
damaged (or missing) is only cut with ``force``: the partition then ends at the last intact
batch before the damage, everything from there on is moved to
``<log>/quarantine/<topic>-<partition>-<offset>.log`` (never deleted), and the commit
record says where the partition now ends. A damaged commit record is rebuilt from the
segments only with ``force`` too, since that takes every intact batch as committed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from streams.log_commit import (
    COMMIT_FILE,
    EMPTY,
    CommitRecord,
    Committed,
    Key,
    partitions_on_disk,
)
from streams.log_port import CorruptLog, LogError
from streams.log_segment import (
    SEGMENT_NAME,
    Index,
    SegmentScan,
    index_problem,
    legacy_end,
    rebuild_index,
    scan_segment,
)

QUARANTINE = "quarantine"


@dataclass
class LogReport:
    partitions: int = 0
    records: int = 0
    # Committed data that is wrong: readers stop there. Each entry names the place.
    problems: list[str] = field(default_factory=list)
    # Wrong but harmless to committed data (a damaged index, bytes never committed).
    notices: list[str] = field(default_factory=list)
    # What a repair did.
    actions: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _topic_partitions(root: Path, topic: str) -> tuple[int | None, str | None]:
    """A topic's partition count from its metadata, or the reason it has none."""
    meta = root / topic / "topic.json"
    try:
        count = orjson.loads(meta.read_bytes())["partitions"]
    except FileNotFoundError:
        return None, f"topic {topic}: its metadata {meta} is missing"
    except (OSError, orjson.JSONDecodeError, TypeError, KeyError) as exc:
        return None, f"topic {topic}: its metadata {meta} is damaged ({exc})"
    if type(count) is not int or count < 1:
        return None, f"topic {topic}: its metadata {meta} says {count!r} partitions"
    return count, None


def _committed(root: Path, report: LogReport) -> dict[Key, Committed] | None:
    record = CommitRecord(root)
    try:
        entries = record.entries()
    except CorruptLog as exc:
        report.problems.append(str(exc))
        return None
    if entries is None:
        report.notices.append(
            f"no commit record ({root / COMMIT_FILE}): a log from an earlier version; the "
            "next writer (or `cdb log repair`) makes one"
        )
    return entries


@dataclass
class _Partition:
    """One partition as a scan found it, against what counts as committed."""

    key: Key
    path: Path
    bound: int  # the bytes that count as committed
    scan: SegmentScan
    size: int  # the segment's bytes on disk

    @property
    def place(self) -> str:
        return f"{self.key[0]}/{self.key[1]} ({self.path})"

    @property
    def damaged(self) -> bool:
        return self.scan.problem is not None


def _assess(root: Path, key: Key, entries: dict[Key, Committed] | None) -> _Partition:
    path = root / key[0] / str(key[1]) / f"{SEGMENT_NAME}.log"
    size = path.stat().st_size if path.exists() else 0
    if entries is not None:
        bound = entries.get(key, EMPTY).size
    elif size:
        # No record: the old rule, every intact batch up to damage in the final one.
        try:
            bound = legacy_end(path)[0].size
        except CorruptLog:
            bound = size
    else:
        bound = 0
    return _Partition(key, path, bound, scan_segment(path, bound), size)


def verify_log(root: Path) -> LogReport:
    """Check every committed byte of the log at ``root``; change nothing."""
    if not root.is_dir():
        raise LogError(f"no log at {root}")
    report = LogReport()
    entries = _committed(root, report)
    keys = set(partitions_on_disk(root)) | set(entries or {})
    topics = {topic for topic, _ in keys} | {p.parent.name for p in root.glob("*/topic.json")}
    counts: dict[str, int] = {}
    for topic in sorted(topics):
        count, problem = _topic_partitions(root, topic)
        if count is None:
            report.problems.append(f"{problem}; `cdb log repair` restores it")
        else:
            counts[topic] = count
    for key in sorted(keys):
        topic, partition = key
        if topic in counts and partition >= counts[topic]:
            report.problems.append(
                f"{topic}/{partition}: beyond the topic's {counts[topic]} partition(s); "
                "`cdb log repair` restores the metadata"
            )
        part = _assess(root, key, entries)
        report.partitions += 1
        report.records += part.scan.next_offset
        if part.damaged:
            report.problems.append(
                f"{part.place}: committed data is damaged at offset {part.scan.next_offset} "
                f"(byte {part.scan.valid_size}): {part.scan.problem}; `cdb log repair "
                "--force` cuts the partition there, keeping what it cuts in the quarantine"
            )
        elif entries is not None and part.scan.committed() != entries.get(key, EMPTY):
            committed = entries.get(key, EMPTY)
            report.problems.append(
                f"{part.place}: the commit record says {committed.next_offset} records in "
                f"{committed.size} bytes, the segment holds {part.scan.next_offset} in "
                f"{part.scan.valid_size}"
            )
        damaged_index = index_problem(Index(part.path.with_suffix(".index")), part.scan)
        if damaged_index is not None:
            report.notices.append(
                f"{part.place}: the index is damaged ({damaged_index}); readers scan "
                "without it; `cdb log repair` rebuilds it"
            )
        if part.size > part.bound:
            report.notices.append(
                f"{part.place}: {part.size - part.bound} bytes after the last commit (a "
                "write that never finished); the next writer drops them"
            )
    return report


def repair_log(root: Path, *, force: bool = False) -> LogReport:
    """Repair what can be repaired; with ``force``, cut committed data at damage too."""
    if not root.is_dir():
        raise LogError(f"no log at {root}")
    lock = open(root / ".writer.lock", "a+b")  # noqa: SIM115 - closed below
    try:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LogError(
                f"the log at {root} is being written by another process; repair it when "
                "that has finished"
            ) from None
        return _repair(root, force)
    finally:
        lock.close()


def _repair(root: Path, force: bool) -> LogReport:
    report = LogReport()
    record = CommitRecord(root)
    try:
        entries = record.entries()
    except CorruptLog as exc:
        if not force:
            report.problems.append(
                f"{exc}. Rebuilding it takes every intact batch as committed: "
                "`cdb log repair --force` does so"
            )
            return report
        entries = None
        report.actions.append("the damaged commit record is rebuilt from the segments")
    keys = sorted(set(partitions_on_disk(root)) | set(entries or {}))
    parts = [_assess(root, key, entries) for key in keys]
    report.partitions = len(parts)
    report.records = sum(part.scan.next_offset for part in parts)
    damaged = [part for part in parts if part.damaged]
    if damaged and not force:
        for part in damaged:
            report.problems.append(
                f"{part.place}: committed data is damaged at offset {part.scan.next_offset} "
                f"(byte {part.scan.valid_size}): {part.scan.problem}. `cdb log repair "
                "--force` cuts the partition there; what it cuts is kept in the quarantine"
            )
        return report  # nothing changed: a repair is done whole or not at all
    new_entries: dict[Key, Committed] = {}
    for part in parts:
        scan, name = part.scan, f"{part.key[0]}/{part.key[1]}"
        if part.damaged:
            report.actions.append(
                f"{name}: cut at offset {scan.next_offset} ({scan.problem}); "
                f"{part.bound - scan.valid_size} committed bytes no longer read"
            )
        if part.size > scan.valid_size:
            kept = _quarantine(root, part.key, part.path, scan.valid_size, scan.next_offset)
            what = "never committed" if scan.valid_size >= part.bound else "cut"
            report.actions.append(
                f"{name}: {part.size - scan.valid_size} bytes {what}, kept in {kept}"
            )
        index = Index(part.path.with_suffix(".index"))
        if part.size and index_problem(index, scan) is not None:
            rebuild_index(index, scan)
            report.actions.append(f"{name}: index rebuilt")
        new_entries[part.key] = scan.committed()
    for topic in sorted({topic for topic, _ in keys}):
        count, problem = _topic_partitions(root, topic)
        needed = max(p for t, p in keys if t == topic) + 1
        if count is None or count < needed:
            meta = root / topic / "topic.json"
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_bytes(orjson.dumps({"name": topic, "partitions": max(needed, count or 0)}))
            report.actions.append(
                f"topic {topic}: metadata restored ({problem or f'{count} partition(s)'})"
            )
    record.write(new_entries)
    return report


def _quarantine(root: Path, key: Key, path: Path, at: int, offset: int) -> Path:
    """Move the bytes of ``path`` from ``at`` on into the quarantine; cut them off."""
    directory = root / QUARANTINE
    directory.mkdir(exist_ok=True)
    target = directory / f"{key[0]}-{key[1]}-{offset}.log"
    n = 1
    while target.exists():
        n += 1
        target = directory / f"{key[0]}-{key[1]}-{offset}-{n}.log"
    with open(path, "r+b") as source, open(target, "wb") as out:
        source.seek(at)
        shutil.copyfileobj(source, out)
        out.flush()
        os.fsync(out.fileno())
        source.truncate(at)
        os.fsync(source.fileno())
    return target
