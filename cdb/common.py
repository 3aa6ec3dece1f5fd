"""What the command line's commands share: errors, the parser's manners, settings, the
run configuration options, and how times and numbers are shown."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdb import bootstrap
from cdb.risk_file import risk_config_from
from domain.execution import CostModel
from domain.run_config import BacktestConfig
from domain.strategies import STRATEGIES
from projections.store import StoreError
from streams.log_port import LogError

EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input from the user: reported in one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as argparse does, with our prefix
        self.print_usage(sys.stderr)
        sys.stderr.write(f"cdb: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def settings_of(args: argparse.Namespace) -> bootstrap.Settings:
    try:
        return bootstrap.settings(
            getattr(args, "data_dir", None),
            getattr(args, "log", None),
            getattr(args, "store", None),
        )
    except (LogError, StoreError) as exc:
        raise UsageError(str(exc)) from None


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
    parser.add_argument("--cash", type=float, default=10_000.0, help="initial cash (default 10000)")
    parser.add_argument(
        "--fee-bps", type=float, default=10.0, help="fee in basis points (default 10)"
    )
    parser.add_argument(
        "--slippage-bps", type=float, default=0.0, help="slippage in basis points (default 0)"
    )


def run_config_of(args: argparse.Namespace, seed: int) -> BacktestConfig:
    """The run configuration ``add_run_arguments`` options give."""
    risk = risk_config_from(args.risk_config)
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
