"""``cdb``: the command line. Thin: parse, call the layers below, print.

Bad input gives one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import OperationalError

from cdb import bootstrap, live_commands, risk_commands
from cdb import log_commands as log_commands_module
from cdb.common import Parser as _Parser
from cdb.common import (
    UsageError,
    add_run_arguments,
    count_arg,
    run_config_of,
    seconds_arg,
    seed_arg,
)
from cdb.common import fmt as _fmt
from cdb.common import fmt_time as _fmt_time
from cdb.common import settings_of as _settings
from cdb.common import time_arg as _time_arg
from cdb.error_lines import Places, failure_of, verbose_from_environment
from cdb.risk_file import RiskConfigError, risk_config_from
from domain.strategies import StrategyConfigError
from projections import tables
from projections.candle_sink import CandleSink
from projections.digest import projection_digest
from projections.projector import ProjectionError, catch_up, projector_name
from projections.rebuild import rebuild
from projections.report import render_report
from projections.status import rejections_by_reason
from projections.store import StoreError, normalise_store_url, upgrade
from streams.backtest import BacktestOutcome, RunIdError, existing_run_ids, run_backtest
from streams.csv_source import CandleSource, CsvCandleSource, DataSourceError
from streams.digest import log_digest
from streams.embedded_log import EmbeddedLog
from streams.log_port import EventLog, LogError, describe
from streams.observability import EXECUTION_PORT, SIGNAL_PORT, Health, Metrics
from streams.replay import ReplayError, ReplayOutcome, replay_market_data, replay_signals
from streams.snapshots import SNAPSHOT_EVERY

# -- parser -----------------------------------------------------------------------------------

EXIT_CODES = """exit codes:
  0    done
  1    an internal error (a bug in cdb): one line, the traceback with --verbose
  2    bad input, or a database, broker or file system that refuses or fails: one line
       with the cause and what to do
  130  interrupted (Ctrl-C); the log keeps every committed event

Every error is one line on stderr starting 'cdb: error:'. --verbose (or $CDB_VERBOSE=1)
prints the traceback before it."""


def _parser() -> argparse.ArgumentParser:
    # --data-dir, --log, --store and --verbose are accepted before or after the subcommand.
    places = _Parser(add_help=False)
    places.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help=f"where the log and read models live (default ${bootstrap.DATA_DIR_ENV} or "
        f"{bootstrap.DEFAULT_DATA_DIR})",
    )
    places.add_argument(
        "--log",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="the log: 'embedded' (default, under the data directory) or kafka://HOST:PORT "
        f"(default ${bootstrap.LOG_ENV})",
    )
    places.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="the read models: sqlite:///FILE (default, in the data directory) or "
        f"postgresql://USER:PASSWORD@HOST:PORT/claire_de_binare (default ${bootstrap.STORE_ENV})",
    )
    places.add_argument(
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, print the traceback before the one-line message (also $CDB_VERBOSE=1)",
    )
    parser = _Parser(
        prog="cdb",
        description="Claire de Binare: event-sourced paper trading.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[places],
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    bt = commands.add_parser(
        "backtest", help="run a paper test over candle files", parents=[places]
    )
    bt.add_argument(
        "--feed",
        default="csv",
        choices=["csv", "mock"],
        help="candle files (default) or the generated feed `cdb paper --feed mock` trades live",
    )
    bt.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[SYMBOL=]FILE",
        help="CSV with header timestamp_ms,open,high,low,close,volume (repeatable)",
    )
    live_commands.add_mock_feed_arguments(bt)
    add_run_arguments(bt)
    bt.add_argument(
        "--seed",
        type=seed_arg,
        default=0,
        help="recorded in the run metadata; the mock feed's seed (default 0; -2^63 to 2^63-1)",
    )
    bt.add_argument("--run-id", help="name the run (default: derived from config and data)")
    bt.add_argument("--report", type=Path, metavar="FILE.html", help="write an HTML report")
    bt.add_argument("--json", action="store_true", help="print one JSON object")
    bt.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    log = commands.add_parser("log", help="inspect the event log", parents=[places])
    log_commands = log.add_subparsers(dest="log_command", required=True, parser_class=_Parser)
    topics_cmd = log_commands.add_parser(
        "topics", help="list topics, partitions and offsets", parents=[places]
    )
    topics_cmd.add_argument("--json", action="store_true")
    read = log_commands.add_parser("read", help="print records as JSON lines", parents=[places])
    read.add_argument("--topic", required=True)
    read.add_argument("--partition", type=int, default=0)
    read.add_argument("--from-offset", type=int)
    read.add_argument("--to-offset", type=int, help="exclusive")
    read.add_argument("--from-time", help="epoch ms or ISO time (UTC)")
    read.add_argument("--to-time", help="epoch ms or ISO time (UTC), exclusive")
    read.add_argument("--run-id", help="only records of this run")
    read.add_argument("--limit", type=count_arg, metavar="N", help="at most N records (N >= 0)")
    digest = log_commands.add_parser(
        "digest", help="sha256 over events (see docs/log.md)", parents=[places]
    )
    digest.add_argument("--topic", action="append", help="only these topics (repeatable)")
    digest.add_argument("--run-id", help="only events of this run")
    log_commands_module.add_parsers(log_commands, places)

    db = commands.add_parser("db", help="the read-model store's schema", parents=[places])
    db_commands = db.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    db_commands.add_parser(
        "upgrade", help="apply the schema migrations (Alembic)", parents=[places]
    )

    project = commands.add_parser(
        "project",
        help="follow the log into the read models until stopped (or --once)",
        parents=[places],
    )
    project.add_argument("--once", action="store_true", help="catch up, then exit")
    project.add_argument("--batch-size", type=int, default=2000, help="events per transaction")
    project.add_argument(
        "--poll",
        type=seconds_arg,
        default=0.5,
        help="seconds between idle polls (embedded log); on Kafka, records are folded as "
        "they arrive and this is the longest wait before a stop is noticed",
    )
    live_commands.add_service_arguments(project, EXECUTION_PORT)

    projections = commands.add_parser(
        "projections", help="rebuild or digest the read models", parents=[places]
    )
    projection_commands = projections.add_subparsers(
        dest="projections_command", required=True, parser_class=_Parser
    )
    rebuild = projection_commands.add_parser(
        "rebuild",
        help="refold read models from offset zero, switching over atomically",
        parents=[places],
    )
    rebuild.add_argument("--projection", metavar="NAME", help="only this table")
    rebuild.add_argument("--run-id", help="print the digest of this run's rows")
    pdigest = projection_commands.add_parser(
        "digest", help="sha256 over the read models as they are", parents=[places]
    )
    pdigest.add_argument("--run-id", help="only this run's rows")

    worker = commands.add_parser(
        "worker",
        help="run the engine as stream agents on Kafka until stopped (needs --log kafka://)",
        parents=[places],
    )
    worker.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info"])
    worker.add_argument(
        "--intake",
        default="batch",
        choices=["batch", "agent"],
        help="how records reach the engine: polled in batches (default, fastest) or through "
        "a faust agent",
    )
    live_commands.add_service_arguments(worker, SIGNAL_PORT)

    replay = commands.add_parser(
        "replay",
        help="re-run the engine over a range of market_data offsets into a new run; compare",
        parents=[places],
    )
    replay.add_argument("--topic", required=True, help="the topic of the range: market_data")
    replay.add_argument("--partition", type=int, default=0)
    replay.add_argument("--from-offset", type=int, help="the first offset replayed")
    replay.add_argument("--to-offset", type=int, help="the last offset replayed (included)")
    replay.add_argument("--from-time", help="instead of --from-offset: epoch ms or ISO time")
    replay.add_argument("--to-time", help="instead of --to-offset: epoch ms or ISO (included)")
    replay.add_argument(
        "--risk-config",
        type=Path,
        metavar="FILE",
        help="with --topic signals: the RiskConfig (TOML or JSON) to decide them with",
    )
    replay.add_argument("--run-id", help="name the replay's run (default: derived)")
    replay.add_argument("--json", action="store_true", help="print one JSON object")

    live_commands.add_parsers(commands, places)
    risk_commands.add_parsers(commands, places)

    report = commands.add_parser("report", help="write the HTML report of a run", parents=[places])
    report.add_argument("--run-id", required=True)
    report.add_argument("--out", type=Path, required=True, metavar="FILE.html")
    return parser


# -- backtest -----------------------------------------------------------------------------------


def _progress_bar(total: int) -> Callable[[int], None] | None:
    if not sys.stderr.isatty() or total <= 0:
        return None
    done = 0
    shown = -1

    def update(nbytes: int) -> None:
        nonlocal done, shown
        done += nbytes
        percent = min(100, done * 100 // total)
        if percent != shown:
            shown = percent
            bar = "#" * (percent // 4)
            sys.stderr.write(f"\r  reading candles [{bar:<25}] {percent:3d}%")
            if percent == 100:
                sys.stderr.write("\r" + " " * 50 + "\r")
            sys.stderr.flush()

    return update


def cmd_backtest(args: argparse.Namespace) -> int:
    started = time.perf_counter()  # for the elapsed figure only; nothing decides on it
    sources = live_commands.sources_of(args)
    if args.report is not None:
        # Checked before the run, so a report that cannot be written fails before any work.
        _check_report_path(args.report)
    config = run_config_of(args, args.seed)
    settings = _settings(args)
    size = sum(s.size for s in sources if isinstance(s, CsvCandleSource))
    progress = None if args.no_progress else _progress_bar(size)
    try:
        log = bootstrap.open_log(settings)
    except LogError as exc:
        raise UsageError(str(exc)) from None
    try:
        # The schema first: the candles are folded as they are written (CandleSink). No
        # connection stays open while the run forks its market-data process.
        engine = bootstrap.open_read_models(settings)
        engine.dispose()
        sink = (
            CandleSink(settings.store_url, projector_name(log))
            if isinstance(log, EmbeddedLog)
            else None
        )
        outcome = run_backtest(
            config,
            sources,
            log,
            run_id=args.run_id,
            on_progress=progress,
            parallel=not settings.single_process,
            market_data_sink=sink,
            snapshots=bootstrap.snapshot_store(settings) if isinstance(log, EmbeddedLog) else None,
            snapshot_every=_snapshot_every(),
        )
        if sink is not None:
            sink.close()
        try:
            catch_up(log, engine, until=outcome.written)
            proj_digest = projection_digest(engine, outcome.run_id, known=outcome.sink_report)
            with engine.connect() as conn:
                run = (
                    conn.execute(select(tables.runs).where(tables.runs.c.run_id == outcome.run_id))
                    .mappings()
                    .one()
                )
                raised = conn.execute(
                    select(tables.alerts.c.level, tables.alerts.c.code, tables.alerts.c.timestamp)
                    .where(tables.alerts.c.run_id == outcome.run_id)
                    .order_by(tables.alerts.c.sequence)
                ).all()
                refused = rejections_by_reason(conn, outcome.run_id)
            if args.report:
                _write_report(args.report, render_report(engine, outcome.run_id))
        finally:
            engine.dispose()
    finally:
        log.close()
    elapsed = time.perf_counter() - started
    summary = _summary(outcome, run, refused, proj_digest, elapsed, settings, args.report)
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    else:
        _print_summary(summary, run, raised, sources)
    return 0


def _check_report_path(path: Path) -> None:
    """Refuse, before any work, a report path that cannot be a file; make its directory."""
    if path.is_dir():
        raise UsageError(f"cannot write report {path}: it is a directory; give a file name")
    try:
        path.resolve().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write report {path}: {exc.strerror or exc}") from None


def _write_report(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write report {path}: {exc.strerror or exc}") from None


def _summary(
    outcome: BacktestOutcome,
    run: Any,
    refused: dict[str, int],
    proj_digest: str,
    elapsed: float,
    settings: bootstrap.Settings,
    report: Path | None,
) -> dict[str, Any]:
    return {
        "run_id": outcome.run_id,
        "strategy": run["strategy_id"],
        "candles": run["candles"],
        "signals": run["signals"],
        "orders": run["orders"],
        "trades": run["fills"],
        "closed_trades": run["trades"],
        "rejected": run["rejected"],
        "rejected_by_reason": refused,
        "dead_letters": run["dead_letters"],
        "initial_cash": run["initial_cash"],
        "final_equity": run["final_equity"],
        "return_pct": run["total_return_pct"],
        "cagr_pct": run["cagr_pct"],
        "max_drawdown_pct": run["max_drawdown_pct"],
        "sharpe": run["sharpe"],
        "sortino": run["sortino"],
        "win_rate": run["win_rate"],
        "profit_factor": run["profit_factor"],
        "expectancy": run["expectancy"],
        "exposure_time_pct": run["exposure_time_pct"],
        "log_digest": outcome.log_digest,
        "projection_digest": proj_digest,
        "data_dir": str(settings.data_dir),
        "log": settings.log_location,
        "store": settings.store_location,
        "report": str(report) if report else None,
        "elapsed_s": round(elapsed, 3),
    }


def _period(run: Any) -> str:
    if not run["candles"]:
        return "none (no usable candle)"
    return f"{_fmt_time(run['started_at'])} to {_fmt_time(run['ended_at'])} UTC"


def _by_reason(counts: dict[str, int]) -> str:
    """`` (INSUFFICIENT_CASH 40, NO_POSITION_TO_CLOSE 19)``, or nothing when none."""
    if not counts:
        return ""
    return " (" + ", ".join(f"{reason} {count:,}" for reason, count in counts.items()) + ")"


def _print_summary(
    s: dict[str, Any], run: Any, raised: Sequence[Any], sources: Sequence[CandleSource]
) -> None:
    data = ", ".join(f"{src.symbol} {src.interval} ({src.name})" for src in sources)
    win = None if s["win_rate"] is None else s["win_rate"] * 100
    alerts = "none"
    if raised:
        first = raised[0]
        # A run without candles has no time of its own: its alerts are stamped 0.
        when = f" at {_fmt_time(first.timestamp)}" if s["candles"] else ""
        alerts = f"{len(raised)} (first: {first.level} {first.code}{when})"
    rate = s["candles"] / s["elapsed_s"] if s["elapsed_s"] else 0
    lines = [
        f"Claire de Binare backtest {s['run_id']}  strategy {s['strategy']}",
        f"  data           {data}",
        f"  period         {_period(run)}",
        f"  candles        {s['candles']:,}   dead letters {s['dead_letters']:,}",
        f"  signals        {s['signals']:,}   orders {s['orders']:,}   fills {s['trades']:,}"
        f"   rejected {s['rejected']:,}{_by_reason(s['rejected_by_reason'])}",
        f"  equity         {_fmt(s['initial_cash'])} -> {_fmt(s['final_equity'])}"
        f"   return {_fmt(s['return_pct'], suffix='%')}   CAGR {_fmt(s['cagr_pct'], suffix='%')}",
        f"  risk           max drawdown {_fmt(s['max_drawdown_pct'], suffix='%')}"
        f"   Sharpe {_fmt(s['sharpe'])}   Sortino {_fmt(s['sortino'])}"
        f"   exposure time {_fmt(s['exposure_time_pct'], 1, '%')}",
        f"  closed trades  {s['closed_trades']:,}   win rate {_fmt(win, 1, '%')}"
        f"   profit factor {_fmt(s['profit_factor'])}   expectancy {_fmt(s['expectancy'])}",
        f"  alerts         {alerts}",
        f"  log            {s['log']}   log_digest {s['log_digest']}",
        f"  read models    {s['store']}   projection_digest {s['projection_digest']}",
    ]
    if s["report"]:
        lines.append(f"  report         {s['report']}")
    lines.append(f"  elapsed        {s['elapsed_s']:.2f} s ({rate:,.0f} candles/s)")
    sys.stdout.write("\n".join(lines) + "\n")


# -- log --------------------------------------------------------------------------------------


def _existing_log(args: argparse.Namespace) -> EventLog:
    settings = _settings(args)
    if not bootstrap.log_exists(settings):
        raise UsageError(f"no log at {settings.log_dir}: run a backtest first")
    return bootstrap.open_log(settings)


def cmd_log(args: argparse.Namespace) -> int:
    if log_commands_module.handles(args):
        return log_commands_module.cmd_log_check(args)
    log = _existing_log(args)
    try:
        return _log_command(log, args)
    finally:
        log.close()


def _log_command(log: EventLog, args: argparse.Namespace) -> int:
    if args.log_command == "topics":
        infos = describe(log)
        if args.json:
            payload = [
                {"topic": i.name, "partitions": i.partitions, "end_offsets": list(i.end_offsets)}
                for i in infos
            ]
            sys.stdout.write(orjson.dumps(payload).decode() + "\n")
        else:
            sys.stdout.write(f"{'topic':<16} {'partitions':>10} {'records':>12}\n")
            for i in infos:
                sys.stdout.write(f"{i.name:<16} {i.partitions:>10} {i.records:>12,}\n")
        return 0
    if args.log_command == "digest":
        known = log.topic_names()
        for topic in args.topic or []:
            if topic not in known:
                raise UsageError(f"unknown topic {topic!r} (topics: {', '.join(known)})")
        if args.run_id is not None:
            _check_run_in_log(log, args.run_id, _settings(args).log_location)
        sys.stdout.write(log_digest(log, args.run_id, args.topic) + "\n")
        return 0
    return _read(log, args)


def _check_run_in_log(log: EventLog, run_id: str, where: str) -> None:
    """A run is in the log when the ``runs`` topic holds a record of it (its metadata is
    the first event a run writes): a digest of anything else would be the hash of nothing."""
    runs = sorted(existing_run_ids(log))
    if run_id not in runs:
        raise UsageError(f"no run {run_id!r} in the log at {where}; {_runs_hint(runs)}")


def _runs_hint(runs: Sequence[str]) -> str:
    listed = ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
    found = f"it holds {listed}" if runs else "it holds no run yet"
    return f"{found} (`cdb log read --topic runs` lists every run with its metadata)"


def _read(log: EventLog, args: argparse.Namespace) -> int:
    known = log.topic_names()
    if args.topic not in known:
        raise UsageError(f"unknown topic {args.topic!r} (topics: {', '.join(known)})")
    partitions = log.partitions(args.topic)
    if not 0 <= args.partition < partitions:
        raise UsageError(
            f"topic {args.topic} has partitions 0..{partitions - 1}, not {args.partition}"
        )
    start = args.from_offset or 0
    end = args.to_offset
    if args.from_time is not None:
        start = max(
            start, log.offset_for_time(args.topic, args.partition, _time_arg(args.from_time))
        )
    if args.to_time is not None:
        by_time = log.offset_for_time(args.topic, args.partition, _time_arg(args.to_time))
        end = by_time if end is None else min(end, by_time)
    if start < 0 or (end is not None and end < 0):
        raise UsageError("offsets cannot be negative")
    if args.from_offset is not None and end is not None and args.from_offset > end:
        raise UsageError(f"--from-offset {args.from_offset} is after --to-offset {end}")
    head = f'{{"topic":"{args.topic}","partition":{args.partition},'.encode()
    out = sys.stdout.buffer
    written = 0
    for record in log.read(args.topic, args.partition, start, end):
        if args.run_id is not None and record.key != args.run_id:
            continue
        if args.limit is not None and written >= args.limit:
            break
        line = head + b'"offset":%d,"timestamp":%d,"key":%s,"value":%s}\n' % (
            record.offset,
            record.timestamp,
            orjson.dumps(record.key),
            record.value,
        )
        try:
            out.write(line)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _output_error(exc) from None
        written += 1
    _flush_output()
    return 0


def _output_error(exc: OSError) -> UsageError:
    """A write to stdout that failed (a full disk behind a redirection, say): an error
    that names stdout, since the exception itself names no file."""
    reason = (exc.strerror or str(exc)).lower()
    return UsageError(f"cannot write to standard output: {reason}")


def _flush_output() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _output_error(exc) from None


# -- replay -----------------------------------------------------------------------------------


def _snapshot_every() -> int:
    """Candles between two engine snapshots: ``$CDB_SNAPSHOT_EVERY``, or the default."""
    raw = os.environ.get("CDB_SNAPSHOT_EVERY", "").strip()
    if not raw:
        return SNAPSHOT_EVERY
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"$CDB_SNAPSHOT_EVERY must be a positive whole number, not {raw!r}")
    return int(raw)


def _replay_range(log: EventLog, args: argparse.Namespace) -> tuple[int, int]:
    if args.from_offset is not None and args.from_time is not None:
        raise UsageError("give --from-offset or --from-time, not both")
    if args.to_offset is not None and args.to_time is not None:
        raise UsageError("give --to-offset or --to-time, not both")
    if args.topic not in log.topic_names():
        raise UsageError(f"unknown topic {args.topic!r} (topics: {', '.join(log.topic_names())})")
    if not 0 <= args.partition < log.partitions(args.topic):
        raise UsageError(
            f"topic {args.topic} has partitions 0..{log.partitions(args.topic) - 1}, "
            f"not {args.partition}"
        )
    first = args.from_offset
    if args.from_time is not None:
        first = log.offset_for_time(args.topic, args.partition, _time_arg(args.from_time))
    last = args.to_offset
    if args.to_time is not None:  # the last record at or before that time
        after = log.offset_for_time(args.topic, args.partition, _time_arg(args.to_time) + 1)
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
        f"{_fmt_time(first.timestamp)} to {_fmt_time(last.timestamp)} UTC"
    )


def _range_end(offset: int | None, time_text: str | None) -> str:
    if time_text is None:
        return f"offset {offset}"
    return f"{_fmt_time(_time_arg(time_text))} UTC"


def cmd_replay(args: argparse.Namespace) -> int:
    settings = _settings(args)
    log = _existing_log(args)
    try:
        first, last = _replay_range(log, args)
        if args.topic not in ("market_data", "signals"):
            raise UsageError(
                f"cannot replay topic {args.topic!r}: market_data (the engine over a range of "
                "candles) or signals (the Risk Engine over a range of signals)"
            )
        if args.topic == "signals" and args.risk_config is None:
            raise UsageError("a replay of signals needs --risk-config FILE (the rules to try)")
        if args.topic == "market_data" and args.risk_config is not None:
            raise UsageError("--risk-config is for --topic signals")
        snapshots = bootstrap.snapshot_store(settings)
        try:
            if args.topic == "signals":
                risk = risk_config_from(args.risk_config)
                outcome = replay_signals(
                    log, snapshots, args.partition, first, last, risk, args.run_id
                )
            else:
                outcome = replay_market_data(
                    log, snapshots, args.partition, first, last, args.run_id
                )
        except ReplayError as exc:
            raise UsageError(str(exc)) from None
        engine = bootstrap.open_read_models(settings)
        try:
            catch_up(log, engine)
        finally:
            engine.dispose()
    finally:
        log.close()
    summary = _replay_summary(outcome)
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    else:
        _print_replay(summary)
    return 0


def _replay_summary(outcome: ReplayOutcome) -> dict[str, Any]:
    c = outcome.comparison
    divergence = c.first_divergence
    return {
        "run_id": outcome.run_id,
        "original_run_id": outcome.original_run_id,
        "topic": outcome.topic,
        "partition": outcome.partition,
        "from_offset": outcome.from_offset,
        "to_offset": outcome.to_offset,
        "candles": outcome.candles,
        "restored_from_snapshot_at_candle": outcome.restored_from,
        "refolded_candles": outcome.refolded,
        "events_compared": c.events,
        "identical": c.identical,
        "first_divergence": None
        if divergence is None
        else {
            "topic": divergence.topic,
            "offset": divergence.offset,
            "original": divergence.original,
            "replayed": divergence.replayed,
        },
        "fills": {"original": c.fills[0], "replayed": c.fills[1]},
        "trades_added": c.trades_added,
        "trades_removed": c.trades_removed,
        "final_equity": {"original": c.final_equity[0], "replayed": c.final_equity[1]},
        "max_drawdown_pct": {"original": c.max_drawdown_pct[0], "replayed": c.max_drawdown_pct[1]},
    }


def _print_replay(s: dict[str, Any]) -> None:
    restored = s["restored_from_snapshot_at_candle"]
    state = (
        f"the snapshot at candle {restored:,}" if restored is not None else "the run's first candle"
    )
    out = [
        f"replay  {s['run_id']}  of run {s['original_run_id']}",
        f"  range          {s['topic']}/{s['partition']} offsets "
        f"{s['from_offset']}..{s['to_offset']}  ({s['candles']:,} candles replayed)",
        f"  state          from {state}, {s['refolded_candles']:,} candles refolded to the range",
    ]
    if s["identical"]:
        out.append(
            f"  result         identical: {s['events_compared']:,} events equal the original's"
        )
    else:
        d = s["first_divergence"]
        where = f"{d['topic']} offset {d['offset']}" if d["offset"] is not None else d["topic"]
        out.append(f"  result         diverges first at {where}")
        out.append(f"    original     {orjson.dumps(d['original']).decode()}")
        out.append(f"    replayed     {orjson.dumps(d['replayed']).decode()}")
    equity, drawdown = s["final_equity"], s["max_drawdown_pct"]
    fills = s["fills"]
    out.append(
        f"  trades         {fills['original']} -> {fills['replayed']} fills; "
        f"+{len(s['trades_added'])} added, -{len(s['trades_removed'])} removed"
    )
    out.append(f"  final equity   {_fmt(equity['original'])} -> {_fmt(equity['replayed'])}")
    out.append(
        f"  max drawdown   {_fmt(drawdown['original'], suffix='%')} -> "
        f"{_fmt(drawdown['replayed'], suffix='%')}"
    )
    sys.stdout.write("\n".join(out) + "\n")


# -- report -----------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _check_report_path(args.out)
    engine = bootstrap.open_read_models(settings)
    try:
        text = render_report(engine, args.run_id)
    except LookupError as exc:
        raise UsageError(str(exc.args[0])) from None
    finally:
        engine.dispose()
    _write_report(args.out, text)
    sys.stdout.write(f"report written to {args.out}\n")
    return 0


# -- db -------------------------------------------------------------------------------------


def cmd_db(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.store is None:
        bootstrap.make_data_dir(settings)
    bootstrap.check_store_place(settings)
    engine = create_engine(normalise_store_url(settings.store_url))
    try:
        revision = upgrade(engine)  # a store that cannot be reached: one line, from main
    finally:
        engine.dispose()
    sys.stdout.write(f"{settings.store_location}: schema at revision {revision}\n")
    return 0


# -- project --------------------------------------------------------------------------------


def cmd_project(args: argparse.Namespace) -> int:
    """Fold the log into the read models, batch by batch, until SIGTERM or SIGINT.

    Each batch is one transaction with its checkpoint, so a kill at any moment loses or
    doubles nothing. On Kafka one consumer follows every source partition and records are
    folded as they arrive; on the embedded log a catch-up runs every --poll seconds while
    idle (``projections.projector.follow``). A store that goes away is retried with
    backoff, never given up on.
    """
    from collections.abc import Mapping

    from projections.projector import follow

    if args.batch_size < 1:
        raise UsageError("--batch-size must be positive")
    settings = _settings(args)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    log = _existing_log(args)
    health, metrics = Health(), Metrics()
    health.require("log")
    health.require("store")
    health.set("log", True, settings.log_location)
    server = live_commands.serve(args, health, metrics)
    engine = None
    backoff = 0.0
    folded = 0  # events folded since the last line on stderr
    said_at = time.monotonic()

    def folded_batch(topic: str | None, n: int, lags: Mapping[tuple[str, int], int]) -> None:
        """After each committed batch (topic None: an idle moment): health and metrics.
        The lags come from the follower's own fetches, so this costs no request."""
        nonlocal backoff, folded, said_at
        health.set("store", True, settings.store_location)
        if backoff:
            sys.stderr.write("cdb project: healthy: the store is back, folding resumes\n")
            backoff = 0.0
        if topic is not None:
            metrics.events_in(topic, n)
            folded += n
        for (lag_topic, partition), behind in lags.items():
            metrics.lag(lag_topic, partition, behind)
        now = time.monotonic()
        # A line when the log goes quiet, or every few seconds of a steady stream: not one
        # per batch.
        if folded and (topic is None or now - said_at >= 5.0):
            sys.stderr.write(f"cdb project: {folded:,} events folded\n")
            folded, said_at = 0, now

    try:
        while not stopping:
            try:
                if engine is None:
                    engine = bootstrap.open_read_models(settings)
                if args.once:
                    done = catch_up(log, engine, batch_size=args.batch_size)
                    for topic, n in done.by_topic.items():
                        folded_batch(topic, n, {})
                    folded_batch(None, 0, live_commands.projection_lags(log, engine))
                    break
                follow(
                    log,
                    engine,
                    lambda: stopping,
                    on_batch=folded_batch,
                    batch_size=args.batch_size,
                    poll_s=args.poll,
                )
            except OperationalError as exc:
                backoff = min(max(backoff * 2, 0.5), 10.0)
                reason = str(exc.orig or exc).splitlines()[0]
                health.set("store", False, reason)
                sys.stderr.write(
                    f"cdb project: unhealthy: store unavailable ({reason}); "
                    f"retry in {backoff:g} s\n"
                )
                if engine is not None:
                    engine.dispose()
                    engine = None
                time.sleep(backoff)
    except KeyboardInterrupt:
        pass
    finally:
        health.mark_stopping()
        if server is not None:
            server.stop()
        if engine is not None:
            engine.dispose()
        log.close()
    return 0


# -- projections ------------------------------------------------------------------------------


def cmd_projections(args: argparse.Namespace) -> int:
    settings = _settings(args)
    engine = bootstrap.open_read_models(settings)
    try:
        if args.projections_command == "rebuild":
            log = _existing_log(args)
            try:
                done = rebuild(log, engine, args.projection)
            finally:
                log.close()
            what = args.projection or "all read models"
            sys.stderr.write(f"rebuilt {what} from {done.events:,} events\n")
        if args.run_id is not None:
            _check_run_in_read_models(engine, args.run_id, settings.store_location)
        sys.stdout.write(projection_digest(engine, args.run_id) + "\n")
    finally:
        engine.dispose()
    return 0


def _check_run_in_read_models(engine: Engine, run_id: str, where: str) -> None:
    """A run is in the read models when the ``runs`` table has its row: a digest of any
    other id would be the digest of nothing."""
    runs = tables.runs.c.run_id
    with engine.connect() as conn:
        if conn.execute(select(runs).where(runs == run_id)).first() is not None:
            return
        some = list(conn.execute(select(runs).order_by(runs).limit(6)).scalars())
    listed = ", ".join(some[:5]) + (" and more" if len(some) > 5 else "")
    raise UsageError(
        f"no run {run_id!r} in the read models at {where}; "
        + (f"they hold {listed}" if some else "they hold no run yet")
        + " (`cdb status --run-id ID` shows one; a run still only in the log gets there "
        "with `cdb project --once`)"
    )


# -- worker -----------------------------------------------------------------------------------


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.on_kafka:
        raise UsageError("cdb worker runs on Kafka: give --log kafka://HOST:PORT (or $CDB_LOG)")
    from streams.kafka_log import KafkaLog, parse_kafka_url
    from streams.worker import run_worker

    address = parse_kafka_url(settings.log_url)
    every = _snapshot_every()
    # Until faust installs its own handlers, nothing is in flight: a stop just exits.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with KafkaLog(address) as kafka:  # fail fast, in one line, if the broker is not there
        kafka.topic_names()
    snapshots = bootstrap.snapshot_store(settings)
    health, metrics = Health(), Metrics()
    health.require("broker")
    health.require("consumer group")
    server = live_commands.serve(args, health, metrics)
    try:
        return run_worker(address, args.loglevel, args.intake, snapshots, every, metrics, health)
    finally:
        if server is not None:
            server.stop()


# -- main -------------------------------------------------------------------------------------

# Errors whose own message is the line to print (exit code 2).
_EXPECTED_ERRORS = (
    UsageError,
    DataSourceError,
    StrategyConfigError,
    RiskConfigError,
    RunIdError,
    LogError,
    ProjectionError,
    StoreError,
    bootstrap.SettingsError,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "worker":
        # The Kafka client logs every failed connection attempt; cdb reports the outcome
        # itself, in one line.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    handlers = {
        "db": cmd_db,
        "project": cmd_project,
        "projections": cmd_projections,
        "backtest": cmd_backtest,
        "log": cmd_log,
        "replay": cmd_replay,
        "report": cmd_report,
        "worker": cmd_worker,
        "paper": live_commands.cmd_paper,
        "feed": live_commands.cmd_feed,
        "status": live_commands.cmd_status,
        "intensity": risk_commands.cmd_intensity,
    }
    try:
        code = handlers[args.command](args)
        _flush_output()  # so that output that cannot be written fails here, in one line
        return code
    except KeyboardInterrupt:
        sys.stderr.write("cdb: interrupted; the log keeps every committed event\n")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `cdb log read ... | head`): not an error of ours.
        sys.stderr.close()
        return 0
    except Exception as exc:  # the command boundary: every failure is one line
        failure = failure_of(exc, _places(args), _EXPECTED_ERRORS)
        if getattr(args, "verbose", False) or verbose_from_environment():
            traceback.print_exc(file=sys.stderr)
        sys.stderr.write(f"cdb: error: {failure.line}\n")
        _quiet_unwritable_stdout()
        return failure.exit_code


def _places(args: argparse.Namespace) -> Places | None:
    """Where the command worked, to name in its error line (None if the settings are what
    failed)."""
    try:
        settings = _settings(args)
    except Exception:  # whatever broke the settings, the line is written without them
        return None
    return Places(settings.data_dir, settings.store_url, settings.log_location)


def _quiet_unwritable_stdout() -> None:
    """If what is left for stdout cannot be written (a full disk, say), drop it now, so
    that the interpreter's own flush at exit adds no second message."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass  # nothing more can be done for a stream that has no file behind it
