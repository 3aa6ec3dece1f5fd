"""``cdb worker``: the engine as faust-streaming agents on Kafka, until stopped."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from cdb import bootstrap
from cdb.long_running import add_service_arguments, served
from streams.observability import SIGNAL_PORT, Health, Metrics
from streams.worker import run_worker


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
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
    add_service_arguments(worker, SIGNAL_PORT)


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    bootstrap.require_transport(settings, "worker")
    every = settings.snapshot_every
    # Until faust installs its own handlers, nothing is in flight: a stop just exits.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    address = bootstrap.worker_broker(settings)
    snapshots = bootstrap.snapshot_store(settings)
    health, metrics = Health(), Metrics()
    health.require("broker")
    health.require("consumer group")
    with served(args, health, metrics):
        return run_worker(address, args.loglevel, args.intake, snapshots, every, metrics, health)
