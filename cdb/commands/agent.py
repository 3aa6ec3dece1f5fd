"""``cdb agent signal|risk|execution``: one stage of the staged topology on Kafka, until
stopped."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from cdb import bootstrap
from cdb.long_running import add_service_arguments, served
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
    with served(args, health, metrics):
        return run_stage_agent(
            args.stage,
            address,
            args.loglevel,
            metrics,
            health,
            bootstrap.agent_dir(settings, args.stage),
        )
