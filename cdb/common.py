"""What the command line's commands share: errors, the parser's manners, the run
configuration options, and how times and numbers are shown."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdb.risk_file import risk_config_from
from domain.execution import CostModel
from domain.run_config import BacktestConfig
from domain.strategies import STRATEGIES

EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input from the user: reported in one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as argparse does, with our prefix
        self.print_usage(sys.stderr)
        sys.stderr.write(f"cdb: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


# The run metadata holds the seed as a signed 64-bit integer (as do the read models).
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


def seed_arg(text: str) -> int:
    """``--seed``: a whole number the run metadata can hold."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not SEED_MIN <= seed <= SEED_MAX:
        raise argparse.ArgumentTypeError(
            f"{text} is outside the 64-bit range a seed has (-2^63 to 2^63-1)"
        )
    return seed


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def cash_arg(text: str) -> float:
    """``--cash``: a finite amount above zero."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the initial cash must be above 0")
    return value


def bps_arg(text: str) -> float:
    """``--fee-bps``, ``--slippage-bps``: basis points from 0 to 10,000 (100%)."""
    value = _finite(text)
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 10000 basis points")
    return value


def seconds_arg(text: str) -> float:
    """A wait: a finite number of seconds above zero."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def port_arg(text: str) -> int:
    """``--metrics-port``: a TCP port, 0 for any free one, or -1 for none."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not -1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port: 1-65535, 0 (any) or -1 (none)")
    return value


def count_arg(text: str) -> int:
    """A count of records: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative: give 0 or more")
    return value


def params_of(pairs: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {pair!r}: expected KEY=VALUE")
        params[key.strip()] = value.strip()
    return params


def first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}"
    return str(exc)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that configure a run: strategy, risk, costs, cash."""
    parser.add_argument("--strategy", default="sma_cross", choices=sorted(STRATEGIES))
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="strategy parameter (repeatable), e.g. fast=10",
    )
    parser.add_argument(
        "--risk-config", type=Path, metavar="FILE", help="RiskConfig (TOML or JSON)"
    )
    parser.add_argument(
        "--cash", type=cash_arg, default=10_000.0, help="initial cash, above 0 (default 10000)"
    )
    parser.add_argument(
        "--fee-bps", type=bps_arg, default=10.0, help="fee in basis points, 0-10000 (default 10)"
    )
    parser.add_argument(
        "--slippage-bps",
        type=bps_arg,
        default=0.0,
        help="slippage in basis points, 0-10000 (default 0)",
    )


def run_config_of(
    args: argparse.Namespace, seed: int, risk_overrides: Mapping[str, str]
) -> BacktestConfig:
    """The run configuration ``add_run_arguments`` options give, with the risk
    configuration's ``CDB_RISK__*`` overrides (``Settings.risk_overrides``)."""
    risk = risk_config_from(args.risk_config, risk_overrides)
    try:
        return BacktestConfig(
            strategy_id=args.strategy,
            strategy_params=params_of(args.param),
            risk=risk,
            cost=CostModel(fee_bps=args.fee_bps, slippage_bps=args.slippage_bps),
            initial_cash=args.cash,
            seed=seed,
        )
    except ValueError as exc:
        raise UsageError(first_error(exc)) from None


def time_arg(text: str) -> int:
    """Epoch milliseconds or an ISO 8601 time (UTC unless it says otherwise)."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not a time: {text!r} (epoch ms or ISO 8601)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"
