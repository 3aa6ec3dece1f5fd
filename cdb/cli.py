"""``cdb``: the command line. Thin: parse, call the layers below, print (each command in
``cdb.commands``); the settings are read once, in ``cdb.bootstrap``.

Bad input gives one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from cdb import bootstrap
from cdb.commands import COMMANDS
from cdb.common import Parser, UsageError
from cdb.error_lines import Places, failure_of
from cdb.output import flush_output, quiet_unwritable_stdout
from cdb.risk_file import RiskConfigError
from domain.strategies import StrategyConfigError
from projections.projector import ProjectionError
from projections.store import StoreError
from streams.backtest import RunIdError
from streams.csv_source import DataSourceError
from streams.log_port import LogError

EXIT_CODES = """exit codes:
  0    done
  1    an internal error (a bug in cdb): one line, the traceback with --verbose
  2    bad input, or a database, broker or file system that refuses or fails: one line
       with the cause and what to do
  130  interrupted (Ctrl-C); the log keeps every committed event

Every error is one line on stderr starting 'cdb: error:'. --verbose (or $CDB_VERBOSE=1)
prints the traceback before it."""


def _places_parser() -> argparse.ArgumentParser:
    """--data-dir, --log, --store and --verbose: accepted before or after the subcommand."""
    places = Parser(add_help=False)
    places.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help=f"where the log and read models live (default ${bootstrap.DATA_DIR_ENV} or "
        f"{bootstrap.DEFAULT_DATA_DIR})",
    )
    places.add_argument(
        "--log",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="the log: 'embedded' (default, under the data directory) or kafka://HOST:PORT "
        f"(default ${bootstrap.LOG_ENV})",
    )
    places.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="the read models: sqlite:///FILE (default, in the data directory) or "
        f"postgresql://USER:PASSWORD@HOST:PORT/claire_de_binare (default ${bootstrap.STORE_ENV})",
    )
    places.add_argument(
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, print the traceback before the one-line message (also $CDB_VERBOSE=1)",
    )
    return places


def _parser() -> argparse.ArgumentParser:
    places = _places_parser()
    parser = Parser(
        prog="cdb",
        description="Claire de Binare: event-sourced paper trading.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[places],
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS.values():
        command.add_parser(commands, places)
    return parser


# Errors whose own message is the line to print (exit code 2).
_EXPECTED_ERRORS = (
    UsageError,
    DataSourceError,
    StrategyConfigError,
    RiskConfigError,
    RunIdError,
    LogError,
    ProjectionError,
    StoreError,
    bootstrap.SettingsError,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command not in ("worker", "agent"):
        # The Kafka client logs every failed connection attempt; cdb reports the outcome
        # itself, in one line.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    environment = bootstrap.read_environment()
    settings: bootstrap.Settings | None = None
    try:
        settings = bootstrap.settings(
            getattr(args, "data_dir", None),
            getattr(args, "log", None),
            getattr(args, "store", None),
            environment,
        )
        # Looked up now, not when the table was made: what runs is the module's ``run``.
        code: int = COMMANDS[args.command].run(args, settings)
        flush_output()  # so that output that cannot be written fails here, in one line
        return code
    except KeyboardInterrupt:
        sys.stderr.write("cdb: interrupted; the log keeps every committed event\n")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `cdb log read ... | head`): not an error of ours.
        sys.stderr.close()
        return 0
    except Exception as exc:  # the command boundary: every failure is one line
        places = None
        if settings is not None:  # None if the settings are what failed
            places = Places(settings.data_dir, settings.store_url, settings.log_location)
        failure = failure_of(exc, places, _EXPECTED_ERRORS)
        if getattr(args, "verbose", False) or environment.flag(bootstrap.VERBOSE_ENV):
            traceback.print_exc(file=sys.stderr)
        sys.stderr.write(f"cdb: error: {failure.line}\n")
        quiet_unwritable_stdout()
        return failure.exit_code
