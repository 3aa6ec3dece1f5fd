"""``cdb backtest``: a paper test over candle files (or the generated feed)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cdb import bootstrap, runs
from cdb.backtest_summary import summary_lines, summary_of
from cdb.candle_sources import add_mock_feed_arguments, sources_of
from cdb.common import add_run_arguments, run_config_of, seed_arg
from cdb.output import write_json, write_lines
from cdb.progress import progress_bar
from cdb.report_file import check_report_path
from streams.csv_source import CsvCandleSource


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
    bt = commands.add_parser(
        "backtest", help="run a paper test over candle files", parents=[places]
    )
    bt.add_argument(
        "--feed",
        default="csv",
        choices=["csv", "mock"],
        help="candle files (default) or the generated feed `cdb paper --feed mock` trades live",
    )
    bt.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[SYMBOL=]FILE",
        help="CSV with header timestamp_ms,open,high,low,close,volume (repeatable)",
    )
    add_mock_feed_arguments(bt)
    add_run_arguments(bt)
    bt.add_argument(
        "--seed",
        type=seed_arg,
        default=0,
        help="recorded in the run metadata; the mock feed's seed (default 0; -2^63 to 2^63-1)",
    )
    bt.add_argument("--run-id", help="name the run (default: derived from config and data)")
    bt.add_argument("--report", type=Path, metavar="FILE.html", help="write an HTML report")
    bt.add_argument("--json", action="store_true", help="print one JSON object")
    bt.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    started = time.perf_counter()  # for the elapsed figure only; nothing decides on it
    sources = sources_of(args)
    if args.report is not None:
        # Checked before the run, so a report that cannot be written fails before any work.
        check_report_path(args.report)
    config = run_config_of(args, args.seed, settings.risk_overrides)
    size = sum(s.size for s in sources if isinstance(s, CsvCandleSource))
    result = runs.backtest(
        settings,
        config,
        sources,
        run_id=args.run_id,
        on_progress=None if args.no_progress else progress_bar(size),
        report=args.report,
    )
    summary = summary_of(result, time.perf_counter() - started, settings, args.report)
    if args.json:
        write_json(summary)
    else:
        write_lines(summary_lines(summary, result, sources))
    return 0
