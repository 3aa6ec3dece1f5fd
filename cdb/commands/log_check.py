"""``cdb log verify`` and ``cdb log repair``: a whole embedded log checked, and repaired."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cdb import bootstrap
from cdb.common import UsageError
from cdb.output import write_json
from streams.log_verify import LogReport, repair_log, verify_log


def add_parsers(log_commands: Any, places: argparse.ArgumentParser) -> None:
    verify = log_commands.add_parser(
        "verify",
        help="check every committed byte of the log: metadata, offsets, CRCs, the index "
        "(changes nothing; exit 2 if anything is damaged)",
        parents=[places],
    )
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    repair = log_commands.add_parser(
        "repair",
        help="rebuild a damaged index or topic metadata and set aside bytes never "
        "committed; committed data is only cut with --force",
        parents=[places],
    )
    repair.add_argument(
        "--force",
        action="store_true",
        help="cut each damaged partition at its last intact batch (what is cut goes to "
        "<log>/quarantine) and rebuild a damaged commit record",
    )


def handles(args: argparse.Namespace) -> bool:
    return args.log_command in ("verify", "repair")


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    log_dir = bootstrap.embedded_log_dir(settings, f"log {args.log_command}")
    if not log_dir.is_dir():
        raise UsageError(f"no log at {log_dir}")
    if args.log_command == "verify":
        return _verify(log_dir, args.json)
    report = repair_log(log_dir, force=args.force)
    _print(report)
    if not report.ok:
        raise UsageError(
            "committed data is damaged; nothing was changed. `cdb log repair --force` cuts "
            "it, keeping what it cuts in the quarantine, and the read models then need "
            "`cdb projections rebuild`"
        )
    if any("cut" in action for action in report.actions):
        sys.stdout.write(
            "committed records were cut: run `cdb projections rebuild` so the read models "
            "match the log again\n"
        )
    return 0


def _verify(log_dir: Path, as_json: bool) -> int:
    report = verify_log(log_dir)
    if as_json:
        write_json(_as_dict(report))
    else:
        _print(report)
    if not report.ok:
        raise UsageError(
            f"the log at {log_dir} is damaged ({len(report.problems)} "
            "problem(s) above); readers stop at the damage and nothing cuts it"
        )
    return 0


def _as_dict(report: LogReport) -> dict[str, object]:
    return {
        "ok": report.ok,
        "partitions": report.partitions,
        "records": report.records,
        "problems": report.problems,
        "notices": report.notices,
    }


def _print(report: LogReport) -> None:
    out = sys.stdout
    for line in report.actions:
        out.write(f"repaired: {line}\n")
    for line in report.problems:
        out.write(f"damaged: {line}\n")
    for line in report.notices:
        out.write(f"note: {line}\n")
    if report.partitions or report.ok:
        verdict = "OK" if report.ok else "DAMAGED"
        out.write(f"{report.partitions} partitions, {report.records:,} records: {verdict}\n")
