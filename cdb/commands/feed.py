"""``cdb feed mock|csv``: a live feed's candles published to ``market_data`` as time
passes, for ``cdb worker`` on Kafka."""

from __future__ import annotations

import argparse
from typing import Any

from cdb import bootstrap, runs
from cdb.candle_sources import add_feed_arguments, sources_of, speed_of
from cdb.common import add_run_arguments, run_config_of
from cdb.long_running import Stop, add_service_arguments, served
from cdb.output import write_lines
from cdb.progress import LiveProgress
from streams.observability import MARKET_DATA_PORT, Health, Metrics


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
    feed = commands.add_parser(
        "feed",
        help="publish a live feed's candles to market_data for `cdb worker` (Kafka)",
        parents=[places],
    )
    kinds = feed.add_subparsers(dest="feed", required=True, parser_class=type(feed))
    for kind, what in (("mock", "generated candles"), ("csv", "a candle file, replayed")):
        sub = kinds.add_parser(kind, help=f"publish {what} as time passes", parents=[places])
        add_feed_arguments(sub)
        add_run_arguments(sub)
        sub.add_argument("--run-id", help="name the run (default: derived)")
        add_service_arguments(sub, MARKET_DATA_PORT)


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    bootstrap.require_transport(settings, "feed")
    speed = speed_of(args.speed)
    sources = sources_of(args)
    config = run_config_of(args, args.seed, settings.risk_overrides)
    health, metrics = Health(), Metrics()
    health.require("broker")
    with served(args, health, metrics):
        outcome = runs.feed(
            settings,
            config,
            sources,
            speed=speed,
            run_id=args.run_id,
            health=health,
            observer=LiveProgress(metrics, quiet=False),
            stop=Stop(),
        )
    how = "stopped; run the same command to go on" if outcome.stopped else "published to its end"
    write_lines([f"cdb feed: run {outcome.run_id}: {outcome.candles:,} candles in the log, {how}"])
    return 0
