"""``cdb log``: the event log's topics, records and digest (and, in ``log_check``, the
whole log verified or repaired)."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from cdb import bootstrap
from cdb.commands import log_check
from cdb.common import Parser, UsageError, count_arg
from cdb.log_ranges import read_range
from cdb.output import flush_output, write_bytes, write_json, write_lines
from streams.backtest import existing_run_ids
from streams.digest import log_digest
from streams.log_port import EventLog, describe


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
    log = commands.add_parser("log", help="inspect the event log", parents=[places])
    subcommands = log.add_subparsers(dest="log_command", required=True, parser_class=Parser)
    topics = subcommands.add_parser(
        "topics", help="list topics, partitions and offsets", parents=[places]
    )
    topics.add_argument("--json", action="store_true")
    read = subcommands.add_parser("read", help="print records as JSON lines", parents=[places])
    read.add_argument("--topic", required=True)
    read.add_argument("--partition", type=int, default=0)
    read.add_argument("--from-offset", type=int)
    read.add_argument("--to-offset", type=int, help="exclusive")
    read.add_argument("--from-time", help="epoch ms or ISO time (UTC)")
    read.add_argument("--to-time", help="epoch ms or ISO time (UTC), exclusive")
    read.add_argument("--run-id", help="only records of this run")
    read.add_argument("--limit", type=count_arg, metavar="N", help="at most N records (N >= 0)")
    digest = subcommands.add_parser(
        "digest", help="sha256 over events (see docs/log.md)", parents=[places]
    )
    digest.add_argument("--topic", action="append", help="only these topics (repeatable)")
    digest.add_argument("--run-id", help="only events of this run")
    log_check.add_parsers(subcommands, places)


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    if log_check.handles(args):
        return log_check.run(args, settings)
    log = bootstrap.open_existing_log(settings)
    try:
        if args.log_command == "topics":
            _topics(log, args.json)
        elif args.log_command == "digest":
            _digest(log, args, settings.log_location)
        else:
            _read(log, args)
    finally:
        log.close()
    return 0


def _topics(log: EventLog, as_json: bool) -> None:
    infos = describe(log)
    if as_json:
        write_json(
            [
                {"topic": i.name, "partitions": i.partitions, "end_offsets": list(i.end_offsets)}
                for i in infos
            ]
        )
        return
    write_lines(
        [f"{'topic':<16} {'partitions':>10} {'records':>12}"]
        + [f"{i.name:<16} {i.partitions:>10} {i.records:>12,}" for i in infos]
    )


def _digest(log: EventLog, args: argparse.Namespace, where: str) -> None:
    known = log.topic_names()
    for topic in args.topic or []:
        if topic not in known:
            raise UsageError(f"unknown topic {topic!r} (topics: {', '.join(known)})")
    if args.run_id is not None:
        _check_run_in_log(log, args.run_id, where)
    write_lines([log_digest(log, args.run_id, args.topic)])


def _check_run_in_log(log: EventLog, run_id: str, where: str) -> None:
    """A run is in the log when the ``runs`` topic holds a record of it (its metadata is
    the first event a run writes): a digest of anything else would be the hash of nothing."""
    runs = sorted(existing_run_ids(log))
    if run_id in runs:
        return
    listed = ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
    found = f"it holds {listed}" if runs else "it holds no run yet"
    raise UsageError(
        f"no run {run_id!r} in the log at {where}; {found} "
        "(`cdb log read --topic runs` lists every run with its metadata)"
    )


def _read(log: EventLog, args: argparse.Namespace) -> None:
    """The records as JSON lines, their values as they are on the wire."""
    start, end = read_range(log, args)
    head = f'{{"topic":"{args.topic}","partition":{args.partition},'.encode()
    written = 0
    for record in log.read(args.topic, args.partition, start, end):
        if args.run_id is not None and record.key != args.run_id:
            continue
        if args.limit is not None and written >= args.limit:
            break
        write_bytes(
            head
            + b'"offset":%d,"timestamp":%d,"key":%s,"value":%s}\n'
            % (record.offset, record.timestamp, orjson.dumps(record.key), record.value)
        )
        written += 1
    flush_output()
