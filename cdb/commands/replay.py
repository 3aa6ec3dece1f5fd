"""``cdb replay``: a range of ``market_data`` (or of ``signals``) re-run into a run of its
own, and compared with the original."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cdb import bootstrap, runs
from cdb.common import UsageError
from cdb.log_ranges import replay_range
from cdb.output import write_json, write_lines
from cdb.replay_summary import summary_lines, summary_of
from cdb.risk_file import risk_config_from


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
    replay = commands.add_parser(
        "replay",
        help="re-run the engine over a range of market_data offsets into a new run; compare",
        parents=[places],
    )
    replay.add_argument("--topic", required=True, help="the topic of the range: market_data")
    replay.add_argument("--partition", type=int, default=0)
    replay.add_argument("--from-offset", type=int, help="the first offset replayed")
    replay.add_argument("--to-offset", type=int, help="the last offset replayed (included)")
    replay.add_argument("--from-time", help="instead of --from-offset: epoch ms or ISO time")
    replay.add_argument("--to-time", help="instead of --to-offset: epoch ms or ISO (included)")
    replay.add_argument(
        "--risk-config",
        type=Path,
        metavar="FILE",
        help="with --topic signals: the RiskConfig (TOML or JSON) to decide them with",
    )
    replay.add_argument("--run-id", help="name the replay's run (default: derived)")
    replay.add_argument("--json", action="store_true", help="print one JSON object")


def _check_topic(args: argparse.Namespace) -> None:
    if args.topic not in ("market_data", "signals"):
        raise UsageError(
            f"cannot replay topic {args.topic!r}: market_data (the engine over a range of "
            "candles) or signals (the Risk Engine over a range of signals)"
        )
    if args.topic == "signals" and args.risk_config is None:
        raise UsageError("a replay of signals needs --risk-config FILE (the rules to try)")
    if args.topic == "market_data" and args.risk_config is not None:
        raise UsageError("--risk-config is for --topic signals")


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    log = bootstrap.open_existing_log(settings)
    try:
        first, last = replay_range(log, args)
        _check_topic(args)
        risk = None
        if args.topic == "signals":
            risk = risk_config_from(args.risk_config, settings.risk_overrides)
        request = runs.ReplayRequest(args.partition, first, last, risk, args.run_id)
        outcome = runs.replay(settings, log, request)
    finally:
        log.close()
    summary = summary_of(outcome)
    if args.json:
        write_json(summary)
    else:
        write_lines(summary_lines(summary))
    return 0
