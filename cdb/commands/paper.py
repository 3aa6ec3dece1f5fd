"""``cdb paper``: a live feed paper-traded as it streams, feed, engine and read models in
one process on the embedded log. Stops cleanly on SIGTERM or Ctrl-C; the same command
takes the run up again."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cdb import bootstrap, runs
from cdb.candle_sources import add_feed_arguments, sources_of, speed_of
from cdb.common import add_run_arguments, run_config_of
from cdb.long_running import Stop, add_service_arguments, served
from cdb.output import write_json, write_lines
from cdb.progress import LiveProgress
from cdb.status_lines import status_lines
from streams.observability import MARKET_DATA_PORT, Health, Metrics


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
    paper = commands.add_parser(
        "paper",
        help="paper-trade a live feed: feed, engine and read models in one process (embedded log)",
        parents=[places],
    )
    paper.add_argument("--feed", required=True, choices=["mock", "csv"])
    add_feed_arguments(paper)
    add_run_arguments(paper)
    paper.add_argument("--run-id", help="name the run (default: derived from config and data)")
    paper.add_argument(
        "--no-project",
        action="store_true",
        help="leave the read models to a `cdb project` of their own",
    )
    add_service_arguments(paper, MARKET_DATA_PORT)
    paper.add_argument("--json", action="store_true", help="print the final status as JSON")


def _say(line: str) -> None:
    sys.stderr.write(f"cdb paper: {line}\n")


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    bootstrap.require_transport(settings, "paper")
    speed = speed_of(args.speed)
    sources = sources_of(args)
    config = run_config_of(args, args.seed, settings.risk_overrides)
    health, metrics = Health(), Metrics()
    health.require("log")
    if not args.no_project:
        health.require("store")
    with served(args, health, metrics):
        result = runs.paper(
            settings,
            config,
            sources,
            speed=speed,
            run_id=args.run_id,
            project=not args.no_project,
            health=health,
            metrics=metrics,
            observer=LiveProgress(metrics, quiet=args.json),
            stop=Stop(),
            say=_say,
        )
    outcome = result.outcome
    how = "stopped; run the same command to take it up" if outcome.stopped else "ended"
    if outcome.resumed_at:
        how += f" (taken up at candle {outcome.resumed_at:,})"
    status: dict[str, Any] = {"run_id": outcome.run_id, "candles": outcome.candles}
    if result.status is not None:
        status = result.status
    status["session"] = how
    if args.json:
        write_json(status)
    else:
        write_lines([f"cdb paper: run {outcome.run_id} {how}"])
        if result.status is not None:
            write_lines(status_lines(status))
    return 0
