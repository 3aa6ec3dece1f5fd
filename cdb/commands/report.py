"""``cdb report``: a run's self-contained HTML report, from the read models."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cdb import bootstrap
from cdb.output import write_lines
from cdb.read_models import report


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("report", help="write the HTML report of a run", parents=[places])
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.html")


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    report(settings, args.run_id, args.out)
    write_lines([f"report written to {args.out}"])
    return 0
