"""``cdb db upgrade``: the read-model store's schema migrations."""

from __future__ import annotations

import argparse
from typing import Any

from cdb import bootstrap
from cdb.common import Parser
from cdb.output import write_lines
from cdb.read_models import upgrade_schema


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
    db = commands.add_parser("db", help="the read-model store's schema", parents=[places])
    subcommands = db.add_subparsers(dest="db_command", required=True, parser_class=Parser)
    subcommands.add_parser(
        "upgrade", help="apply the schema migrations (Alembic)", parents=[places]
    )


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    revision = upgrade_schema(settings)
    write_lines([f"{settings.store_location}: schema at revision {revision}"])
    return 0
