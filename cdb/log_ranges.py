"""The range of a topic partition that options name: offsets, or times the log's time
index turns into offsets. Refused in one line when the log cannot hold it."""

from __future__ import annotations

import argparse

from cdb.common import UsageError, fmt_time, time_arg
from streams.log_port import EventLog


def check_topic_partition(log: EventLog, topic: str, partition: int) -> None:
    known = log.topic_names()
    if topic not in known:
        raise UsageError(f"unknown topic {topic!r} (topics: {', '.join(known)})")
    partitions = log.partitions(topic)
    if not 0 <= partition < partitions:
        raise UsageError(f"topic {topic} has partitions 0..{partitions - 1}, not {partition}")


def read_range(log: EventLog, args: argparse.Namespace) -> tuple[int, int | None]:
    """``cdb log read``'s [start, end) offsets: the offsets given, narrowed by the times
    given (end None: to the partition's end)."""
    check_topic_partition(log, args.topic, args.partition)
    start = args.from_offset or 0
    end = args.to_offset
    if args.from_time is not None:
        start = max(
            start, log.offset_for_time(args.topic, args.partition, time_arg(args.from_time))
        )
    if args.to_time is not None:
        by_time = log.offset_for_time(args.topic, args.partition, time_arg(args.to_time))
        end = by_time if end is None else min(end, by_time)
    if start < 0 or (end is not None and end < 0):
        raise UsageError("offsets cannot be negative")
    if args.from_offset is not None and end is not None and args.from_offset > end:
        raise UsageError(f"--from-offset {args.from_offset} is after --to-offset {end}")
    return start, end


def replay_range(log: EventLog, args: argparse.Namespace) -> tuple[int, int]:
    """``cdb replay``'s first and last offsets (both included), by offset or by time."""
    if args.from_offset is not None and args.from_time is not None:
        raise UsageError("give --from-offset or --from-time, not both")
    if args.to_offset is not None and args.to_time is not None:
        raise UsageError("give --to-offset or --to-time, not both")
    check_topic_partition(log, args.topic, args.partition)
    first = args.from_offset
    if args.from_time is not None:
        first = log.offset_for_time(args.topic, args.partition, time_arg(args.from_time))
    last = args.to_offset
    if args.to_time is not None:  # the last record at or before that time
        after = log.offset_for_time(args.topic, args.partition, time_arg(args.to_time) + 1)
        last = after - 1
    if first is None or last is None:
        raise UsageError("give the range: --from-offset/--from-time and --to-offset/--to-time")
    if first > last and (args.from_time is not None or args.to_time is not None):
        raise UsageError(_empty_time_range(log, args))
    return first, last


def _empty_time_range(log: EventLog, args: argparse.Namespace) -> str:
    """Why a range given by time holds no record, in times: the topic's first and last."""
    given = (
        f"from {_range_end(args.from_offset, args.from_time)} "
        f"to {_range_end(args.to_offset, args.to_time)}"
    )
    where = f"{args.topic}/{args.partition}"
    end = log.end_offset(args.topic, args.partition)
    if end == 0:
        return f"the range {given} holds no records: {where} is empty"
    first = next(iter(log.read(args.topic, args.partition, 0, 1)))
    last = next(iter(log.read(args.topic, args.partition, end - 1, end)))
    return (
        f"the range {given} holds no records: {where} runs from "
        f"{fmt_time(first.timestamp)} to {fmt_time(last.timestamp)} UTC"
    )


def _range_end(offset: int | None, time_text: str | None) -> str:
    if time_text is None:
        return f"offset {offset}"
    return f"{fmt_time(time_arg(time_text))} UTC"
