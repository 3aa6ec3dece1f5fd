"""The commands of ``cdb``, one module each. A command module has
``add_parser(commands, places)`` and ``run(args, settings) -> int``: it parses, calls one
function of the layers below, and prints. The table's order is the order of ``--help``."""

from __future__ import annotations

from types import ModuleType

from cdb.commands import (
    agent,
    backtest,
    db,
    feed,
    intensity,
    log,
    paper,
    project,
    projections,
    replay,
    report,
    status,
    worker,
)

COMMANDS: dict[str, ModuleType] = {
    "backtest": backtest,
    "log": log,
    "db": db,
    "project": project,
    "projections": projections,
    "worker": worker,
    "agent": agent,
    "replay": replay,
    "paper": paper,
    "feed": feed,
    "status": status,
    "intensity": intensity,
    "report": report,
}
