"""``cdb paper``, ``cdb feed`` and ``cdb status``: live runs and how they stand.

Thin, as the rest of the command line: options become sources and a run configuration,
``streams.live`` runs them, ``projections.status`` reads the result. Each long-running
command serves ``/health`` and ``/metrics`` (``streams.observability``) and stops cleanly
on SIGTERM or Ctrl-C: what it has published is committed and the run can be taken up again
by the same command.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from cdb import bootstrap
from cdb.common import (
    UsageError,
    add_run_arguments,
    fmt,
    fmt_time,
    port_arg,
    run_config_of,
    seed_arg,
    settings_of,
    time_arg,
)
from domain.events import Candle, Event
from projections.projector import SOURCE_TOPICS, catch_up, projector_name
from projections.status import NoSuchRun, projection_lag, run_status
from streams.csv_source import CandleSource, CsvCandleSource, parse_data_spec
from streams.embedded_log import EmbeddedLog
from streams.live import LiveOutcome, run_feed, run_paper
from streams.log_port import EventLog, LogError
from streams.mock_feed import DEFAULT_START, mock_sources
from streams.observability import (
    CANDLE_TO_PROJECTED_ORDER_RESULT,
    MARKET_DATA_PORT,
    Health,
    Metrics,
    ObservabilityServer,
    PortInUse,
)

DEFAULT_SYMBOLS = "BTC_USDT,ETH_USDT"
DEFAULT_SPEED = "3600"


def add_parsers(commands: Any, places: argparse.ArgumentParser) -> None:
    paper = commands.add_parser(
        "paper",
        help="paper-trade a live feed: feed, engine and read models in one process (embedded log)",
        parents=[places],
    )
    paper.add_argument("--feed", required=True, choices=["mock", "csv"])
    _feed_arguments(paper)
    add_run_arguments(paper)
    paper.add_argument("--run-id", help="name the run (default: derived from config and data)")
    paper.add_argument(
        "--no-project",
        action="store_true",
        help="leave the read models to a `cdb project` of their own",
    )
    add_service_arguments(paper, MARKET_DATA_PORT)
    paper.add_argument("--json", action="store_true", help="print the final status as JSON")

    feed = commands.add_parser(
        "feed",
        help="publish a live feed's candles to market_data for `cdb worker` (Kafka)",
        parents=[places],
    )
    kinds = feed.add_subparsers(dest="feed", required=True, parser_class=type(feed))
    for kind, what in (("mock", "generated candles"), ("csv", "a candle file, replayed")):
        sub = kinds.add_parser(kind, help=f"publish {what} as time passes", parents=[places])
        _feed_arguments(sub)
        add_run_arguments(sub)
        sub.add_argument("--run-id", help="name the run (default: derived)")
        add_service_arguments(sub, MARKET_DATA_PORT)

    status = commands.add_parser(
        "status",
        help="a run's equity, drawdown, open positions, last candle and lag",
        parents=[places],
    )
    status.add_argument("--run-id", help="default: the newest unfinished run, else the newest")
    status.add_argument("--json", action="store_true", help="print one JSON object")


def add_mock_feed_arguments(parser: argparse.ArgumentParser) -> None:
    """The generated feed's options (its seed is the run's ``--seed``)."""
    parser.add_argument(
        "--symbols",
        default=DEFAULT_SYMBOLS,
        help=f"mock feed: comma-separated symbols (default {DEFAULT_SYMBOLS})",
    )
    parser.add_argument("--interval", default="1m", help="mock feed: candle interval (default 1m)")
    parser.add_argument(
        "--count", type=int, help="mock feed: candles per symbol (default: endless)"
    )
    parser.add_argument(
        "--start",
        help="mock feed: the first candle's open time, epoch ms or ISO (default 2024-01-01)",
    )


def _feed_arguments(parser: argparse.ArgumentParser) -> None:
    add_mock_feed_arguments(parser)
    parser.add_argument(
        "--seed",
        type=seed_arg,
        default=0,
        help="mock feed: the seed (default 0; -2^63 to 2^63-1)",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[SYMBOL=]FILE",
        help="csv feed: a candle file (repeatable)",
    )
    parser.add_argument(
        "--speed",
        default=DEFAULT_SPEED,
        help=f"feed time per wall time, or 'max' (default {DEFAULT_SPEED}: an hour a second)",
    )


def add_service_arguments(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument(
        "--metrics-port",
        type=port_arg,
        default=None,
        help=f"serve /health and /metrics on this port (default {port}, if it is free; "
        "0: any free port; -1: none)",
    )
    parser.set_defaults(seed_port=port)
    parser.add_argument("--metrics-host", default="127.0.0.1", help="the address to serve them on")


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise UsageError(f"--speed {text!r}: a positive number or 'max'") from None
    if not speed > 0 or speed == float("inf"):
        raise UsageError(f"--speed {text!r}: a positive number or 'max'")
    return speed


def sources_of(args: argparse.Namespace) -> list[CandleSource]:
    """The sources ``--feed`` and its options name: candle files or a generated feed."""
    if args.feed == "csv":
        if not args.data:
            raise UsageError("the csv feed needs --data FILE (repeatable)")
        if args.count is not None or args.start is not None:
            raise UsageError("--count and --start are for the mock feed")
        sources: list[CandleSource] = [
            CsvCandleSource(*parse_data_spec(spec)) for spec in args.data
        ]
        symbols = [s.symbol for s in sources]
        if len(set(symbols)) != len(symbols):
            raise UsageError(f"two --data files for the same symbol: {', '.join(symbols)}")
        return sources
    if args.data:
        raise UsageError("--data is for the csv feed")
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if not symbols:
        raise UsageError("--symbols: give at least one symbol")
    start = DEFAULT_START if args.start is None else time_arg(args.start)
    return list(
        mock_sources(symbols, seed=args.seed, interval=args.interval, start=start, count=args.count)
    )


class Stop:
    """Set by SIGTERM or SIGINT: the run stops at the next candle, cleanly."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stop]:
        def stop(_signum: int, _frame: object) -> None:
            self.requested = True

        previous = [signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)]
        try:
            yield self
        finally:
            for s, handler in zip((signal.SIGTERM, signal.SIGINT), previous, strict=True):
                signal.signal(s, handler)


class _Observer:
    """Metrics from what the run does, and a progress line about once a second."""

    def __init__(self, metrics: Metrics, quiet: bool) -> None:
        self._metrics = metrics
        self._quiet = quiet
        self.run_id = ""
        self._last_line = 0.0
        self.candles = 0
        self.fills = 0
        self.equity: float | None = None
        self.drawdown: float | None = None
        self.last_ts: int | None = None
        self.behind_now = 0

    def started(self, run_id: str, resumed_at: int) -> None:
        self.run_id = run_id
        self.candles = resumed_at
        what = f"taken up at candle {resumed_at:,}" if resumed_at else "started"
        if not self._quiet:
            sys.stderr.write(f"cdb: run {run_id} {what}\n")

    def folded(self, candles: Sequence[Candle], events: Sequence[Event]) -> None:
        if candles:
            self._metrics.candles_published(self.run_id, candles)
            self.candles += len(candles)
            self.last_ts = candles[-1].timestamp
        self._metrics.events_out(events)
        for event in events:
            if event.type == "order_result" and getattr(event, "status", None) == "FILLED":
                self.fills += 1
            elif event.type == "portfolio_snapshot":
                self.equity = getattr(event, "equity", None)
                self.drawdown = getattr(event, "drawdown_pct", None)
        self._line()

    def projected(self, latencies: Sequence[float]) -> None:
        for seconds in latencies:
            self._metrics.latency(CANDLE_TO_PROJECTED_ORDER_RESULT, seconds)

    def behind(self, candles: int) -> None:
        self.behind_now = candles
        self._metrics.lag("market_data", 0, candles)

    def _line(self) -> None:
        now = time.monotonic()
        if self._quiet or not self.candles or now - self._last_line < 1.0:
            return
        self._last_line = now
        sys.stderr.write(
            f"  {fmt_time(self.last_ts)}  candles {self.candles:,}  fills {self.fills:,}"
            f"  equity {fmt(self.equity)}  drawdown {fmt(self.drawdown, suffix='%')}"
            f"  behind {self.behind_now:,}\n"
        )


def serve(args: argparse.Namespace, health: Health, metrics: Metrics) -> ObservabilityServer | None:
    """Serve health and metrics where ``--metrics-port`` says. On the default port, one
    that is taken is a warning (the process's work does not depend on it); a port asked
    for and taken is an error."""
    port = args.seed_port if args.metrics_port is None else args.metrics_port
    if port < 0:
        return None
    try:
        server = ObservabilityServer(port, health, metrics.registry, host=args.metrics_host).start()
    except PortInUse:
        taken = f"port {port} on {args.metrics_host} is already in use"
        if args.metrics_port is None:
            sys.stderr.write(
                f"cdb: warning: {taken}; health and metrics are not served "
                "(choose a port with --metrics-port)\n"
            )
            return None
        raise UsageError(f"{taken}: choose another --metrics-port, or -1 for none") from None
    sys.stderr.write(f"cdb: health and metrics at {server.url}/health and {server.url}/metrics\n")
    return server


def cmd_paper(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if settings.on_kafka:
        raise UsageError(
            "cdb paper runs on the embedded log; on Kafka run `cdb feed`, `cdb worker` and "
            "`cdb project`, each its own process"
        )
    speed = _speed(args.speed)
    sources = sources_of(args)
    config = run_config_of(args, args.seed)
    health, metrics = Health(), Metrics()
    health.require("log")
    if not args.no_project:
        health.require("store")
    bootstrap.make_data_dir(settings)
    try:
        log = bootstrap.open_log(settings)
        assert isinstance(log, EmbeddedLog)
        log.open_for_writing()
    except LogError as exc:
        raise UsageError(str(exc)) from None
    health.set("log", True, str(settings.log_dir))
    engine: Engine | None = None
    observer = _Observer(metrics, quiet=args.json)
    server = serve(args, health, metrics)
    stop = Stop()
    try:
        if not args.no_project:
            engine = bootstrap.open_read_models(settings)
        project = _projector(log, engine, health, metrics) if engine is not None else None
        with stop.installed():
            outcome = run_paper(
                config,
                sources,
                log,
                speed=speed,
                run_id=args.run_id,
                snapshots=bootstrap.snapshot_store(settings),
                on_committed=project,
                observer=observer,
                should_stop=stop,
            )
        health.mark_stopping()
        _report(outcome, engine, log, args.json)
    finally:
        if server is not None:
            server.stop()
        if engine is not None:
            engine.dispose()
        log.close()
    return 0


def _projector(log: EventLog, engine: Engine, health: Health, metrics: Metrics) -> Any:
    """Fold what the run committed into the read models; a store that is away is noted
    (health, one line) and the run goes on: the log holds the truth, and the next commit
    catches the read models up."""
    down = False

    def project() -> None:
        nonlocal down
        try:
            done = catch_up(log, engine)
        except OperationalError as exc:
            reason = str(exc.orig or exc).splitlines()[0]
            health.set("store", False, reason)
            if not down:
                sys.stderr.write(f"cdb paper: the store is unavailable ({reason}); going on\n")
            down = True
            return
        if down:
            sys.stderr.write("cdb paper: the store is back; the read models catch up\n")
        down = False
        health.set("store", True, "")
        if done.events:
            for (topic, partition), behind in projection_lags(log, engine).items():
                metrics.lag(topic, partition, behind)

    return project


def _report(outcome: LiveOutcome, engine: Engine | None, log: EventLog, as_json: bool) -> None:
    how = "stopped; run the same command to take it up" if outcome.stopped else "ended"
    if outcome.resumed_at:
        how += f" (taken up at candle {outcome.resumed_at:,})"
    status: dict[str, Any] = {"run_id": outcome.run_id, "candles": outcome.candles}
    if engine is not None:
        status = run_status(engine, outcome.run_id)
        status["lag"] = _lag(log, engine)
    status["session"] = how
    if as_json:
        sys.stdout.write(orjson.dumps(status).decode() + "\n")
    else:
        sys.stdout.write(f"cdb paper: run {outcome.run_id} {how}\n")
        if engine is not None:
            _print_status(status)


def projection_lags(log: EventLog, engine: Engine) -> dict[tuple[str, int], int]:
    """Records of each topic partition the read models have not folded yet."""
    names = set(log.topic_names())
    ends = {
        (topic, partition): log.end_offset(topic, partition)
        for topic in SOURCE_TOPICS
        if topic in names
        for partition in range(log.partitions(topic))
    }
    return projection_lag(engine, projector_name(log), ends)


def _lag(log: EventLog, engine: Engine) -> int:
    return sum(projection_lags(log, engine).values())


def _print_status(s: dict[str, Any]) -> None:
    positions = s["open_positions"]
    held = ", ".join(
        f"{p['symbol']} {p['quantity']:g} @ {fmt(p['avg_entry_price'])}"
        f" (last {fmt(p['last_price'])}, P&L {fmt(p['unrealized_pnl'])})"
        for p in positions
    )
    lines = [
        f"Claire de Binare run {s['run_id']}  {s['status']}  strategy {s['strategy']}",
        f"  last candle    {fmt_time(s['last_candle_at'])} UTC   candles {s['candles']:,}",
        f"  equity         {fmt(s['initial_cash'])} -> {fmt(s['equity'])}"
        f"   drawdown {fmt(s['drawdown_pct'], suffix='%')}"
        f"   high-water mark {fmt(s['high_water_mark'])}",
        f"  fills          {s['fills']:,}",
        f"  open positions {held or 'none'}",
    ]
    if "lag" in s:
        lines.append(f"  lag            {s['lag']:,} events not yet in the read models")
    sys.stdout.write("\n".join(lines) + "\n")


def cmd_feed(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if not settings.on_kafka:
        raise UsageError(
            "cdb feed publishes for `cdb worker` on Kafka (--log kafka://HOST:PORT); on the "
            "embedded log, `cdb paper --feed ...` runs the feed and the engine in one process"
        )
    speed = _speed(args.speed)
    sources = sources_of(args)
    config = run_config_of(args, args.seed)
    health, metrics = Health(), Metrics()
    health.require("broker")
    try:
        log = bootstrap.open_log(settings)
        log.topic_names()  # fail fast, in one line, if the broker is not there
    except LogError as exc:
        raise UsageError(str(exc)) from None
    health.set("broker", True, settings.log_location)
    observer = _Observer(metrics, quiet=False)
    server = serve(args, health, metrics)
    stop = Stop()
    try:
        with stop.installed():
            outcome = run_feed(
                config,
                sources,
                log,
                speed=speed,
                run_id=args.run_id,
                observer=observer,
                should_stop=stop,
            )
        health.mark_stopping()
    finally:
        if server is not None:
            server.stop()
        log.close()
    how = "stopped; run the same command to go on" if outcome.stopped else "published to its end"
    sys.stdout.write(
        f"cdb feed: run {outcome.run_id}: {outcome.candles:,} candles in the log, {how}\n"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    engine = bootstrap.open_read_models(settings)
    try:
        # The lag before the status: read after it, a projector folding meanwhile could
        # make the lag 0 beside a status that misses what was folded in between.
        lag = None
        if bootstrap.log_exists(settings):
            log = bootstrap.open_log(settings)
            try:
                lag = _lag(log, engine)
            finally:
                log.close()
        try:
            status = run_status(engine, args.run_id)
        except NoSuchRun as exc:
            raise UsageError(
                f"{exc} ({settings.store_location}): `cdb backtest` or `cdb paper` makes one"
            ) from None
        if lag is not None:
            status["lag"] = lag
    finally:
        engine.dispose()
    if args.json:
        sys.stdout.write(orjson.dumps(status).decode() + "\n")
    else:
        _print_status(status)
    return 0
