"""``cdb project``: the log followed into the read models until stopped (or ``--once``).

Each batch is one transaction with its checkpoint, so a kill at any moment loses or
doubles nothing; a store that goes away is retried, never given up on
(``projections.service.ProjectorService``).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from typing import Any

from cdb import bootstrap
from cdb.common import UsageError, seconds_arg
from cdb.long_running import add_service_arguments, served
from projections.service import ProjectorService
from streams.observability import PROJECTOR_PORT, Health, Metrics


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
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
    add_service_arguments(project, PROJECTOR_PORT)


def _say(line: str) -> None:
    sys.stderr.write(f"cdb project: {line}\n")


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be positive")
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    log = bootstrap.open_existing_log(settings)
    health, metrics = Health(), Metrics()
    health.require("log")
    health.require("store")
    health.set("log", True, settings.log_location)
    service = ProjectorService(
        log,
        lambda: bootstrap.open_read_models(settings),
        health,
        metrics,
        _say,
        store_location=settings.store_location,
        batch_size=args.batch_size,
        poll_s=args.poll,
    )
    try:
        # Ctrl-C stops it as SIGTERM does: each batch is committed whole or not at all.
        with served(args, health, metrics), contextlib.suppress(KeyboardInterrupt):
            service.run(lambda: stopping, once=args.once)
    finally:
        log.close()
    return 0
