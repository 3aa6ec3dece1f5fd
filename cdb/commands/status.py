"""``cdb status``: a run's equity, drawdown, open positions, last candle and lag, from the
read models. Reads only: on a data directory without read models it creates nothing."""

from __future__ import annotations

import argparse
from typing import Any

from cdb import bootstrap
from cdb.output import write_json, write_lines
from cdb.read_models import status
from cdb.status_lines import status_lines


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "status",
        help="a run's equity, drawdown, open positions, last candle and lag",
        parents=[places],
    )
    parser.add_argument("--run-id", help="default: the newest unfinished run, else the newest")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    standing = status(settings, args.run_id)
    if args.json:
        write_json(standing)
    else:
        write_lines(status_lines(standing))
    return 0
