"""``cdb agent signal|risk|execution``: one stage of the staged topology on Kafka, until
stopped. The risk agent also runs the risk service (the adaptive intensity and the Redis
risk cache, as ``cdb intensity``) when it is given a Redis."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from cdb import bootstrap
from cdb.common import seconds_arg
from cdb.long_running import add_service_arguments, served
from projections.risk_cache import REDIS_HOST_ENV
from streams.observability import EXECUTION_PORT, RISK_PORT, SIGNAL_PORT, Health, Metrics

# The seed's ports (streams.stage_agents, which imports faust, is loaded only to run).
STAGES = {"signal": SIGNAL_PORT, "risk": RISK_PORT, "execution": EXECUTION_PORT}


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
    agent = commands.add_parser(
        "agent",
        help="run one stage (signal, risk or execution) as a stream agent on Kafka until "
        "stopped (needs --log kafka://)",
        parents=[places],
    )
    stages = agent.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, port in STAGES.items():
        parser = stages.add_parser(
            stage,
            help={
                "signal": "SE: market_data -> signals",
                "risk": "RE: signals -> risk_decisions, orders, alerts, portfolio",
                "execution": "XS: orders -> order_results",
            }[stage],
            parents=[places],
        )
        parser.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info"])
        if stage == "risk":
            parser.add_argument(
                "--redis",
                metavar="URL",
                help="run the risk service beside the stage: a run's adaptive intensity and "
                "risk state published to this Redis from the read models, the cache healed "
                "(as `cdb intensity`; on by default when $REDIS_HOST is set)",
            )
            parser.add_argument(
                "--intensity-run-id",
                metavar="RUN_ID",
                help="the run the risk service follows (default: the newest unfinished run, "
                "else the newest)",
            )
            parser.add_argument(
                "--intensity-interval",
                type=seconds_arg,
                default=1.0,
                help="seconds between the risk service's passes (default 1)",
            )
        add_service_arguments(parser, port)


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    from streams.stage_agents import run_stage_agent

    bootstrap.require_transport(settings, "agent")
    signal.signal(signal.SIGTERM, _exit_cleanly)
    address = bootstrap.worker_broker(settings, "agent")
    health, metrics = Health(), Metrics()
    health.require("broker")
    health.require("consumer group")
    with contextlib.ExitStack() as beside:
        if args.stage == "risk" and (args.redis or settings.redis.get(REDIS_HOST_ENV, "").strip()):
            beside.enter_context(_risk_service_beside(args, settings, health, metrics))
        beside.enter_context(served(args, health, metrics))
        code = run_stage_agent(
            args.stage,
            address,
            args.loglevel,
            metrics,
            health,
            bootstrap.agent_dir(settings, args.stage),
        )
    return code


@contextlib.contextmanager
def _risk_service_beside(
    args: argparse.Namespace, settings: bootstrap.Settings, health: Health, metrics: Metrics
) -> Iterator[None]:
    """The risk service (``cdb intensity``'s loop) in a thread of the risk agent, its
    gauges and health on the agent's port, stopped with the agent. It reads the read
    models a projector fills and writes only Redis: the stage's events never depend on
    it."""
    from cdb.commands.intensity import risk_service

    stop = threading.Event()
    with risk_service(
        settings,
        args.redis,
        args.intensity_run_id,
        health,
        metrics,
        name="cdb agent risk: risk service",
    ) as service:

        def loop() -> None:
            try:
                service.run(args.intensity_interval, stop.is_set)
            except Exception as exc:  # the stage goes on; health says the service stopped
                health.set("risk service", False, f"stopped: {exc}")
                sys.stderr.write(f"cdb agent risk: the risk service stopped: {exc}\n")

        health.require("risk service")
        health.set("risk service", True, "running")
        thread = threading.Thread(target=loop, name="risk service", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)
