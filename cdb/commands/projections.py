"""``cdb projections rebuild`` and ``cdb projections digest``: the read models refolded
from offset zero, and their digest."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cdb import bootstrap
from cdb.common import Parser
from cdb.output import write_lines
from cdb.read_models import digest, rebuild_read_models


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
    projections = commands.add_parser(
        "projections", help="rebuild or digest the read models", parents=[places]
    )
    subcommands = projections.add_subparsers(
        dest="projections_command", required=True, parser_class=Parser
    )
    rebuild = subcommands.add_parser(
        "rebuild",
        help="refold read models from offset zero, switching over atomically",
        parents=[places],
    )
    rebuild.add_argument("--projection", metavar="NAME", help="only this table")
    rebuild.add_argument("--run-id", help="print the digest of this run's rows")
    pdigest = subcommands.add_parser(
        "digest", help="sha256 over the read models as they are", parents=[places]
    )
    pdigest.add_argument("--run-id", help="only this run's rows")


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    if args.projections_command == "rebuild":
        events = rebuild_read_models(settings, args.projection)
        what = args.projection or "all read models"
        sys.stderr.write(f"rebuilt {what} from {events:,} events\n")
    write_lines([digest(settings, args.run_id)])
    return 0
