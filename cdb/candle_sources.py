"""The candles a command runs on, from ``--feed`` and its options: candle files or the
generated feed, and the pace a live feed plays them at."""

from __future__ import annotations

import argparse

from cdb.common import UsageError, seed_arg, time_arg
from streams.csv_source import CandleSource, CsvCandleSource, parse_data_spec
from streams.mock_feed import DEFAULT_START, mock_sources

DEFAULT_SYMBOLS = "BTC_USDT,ETH_USDT"
DEFAULT_SPEED = "3600"


def add_mock_feed_arguments(parser: argparse.ArgumentParser) -> None:
    """The generated feed's options (its seed is the run's ``--seed``)."""
    parser.add_argument(
        "--symbols",
        default=DEFAULT_SYMBOLS,
        help=f"mock feed: comma-separated symbols (default {DEFAULT_SYMBOLS})",
    )
    parser.add_argument("--interval", default="1m", help="mock feed: candle interval (default 1m)")
    parser.add_argument(
        "--count", type=int, help="mock feed: candles per symbol (default: endless)"
    )
    parser.add_argument(
        "--start",
        help="mock feed: the first candle's open time, epoch ms or ISO (default 2024-01-01)",
    )


def add_feed_arguments(parser: argparse.ArgumentParser) -> None:
    """A live feed's options: the generated feed's, its seed, candle files, the pace."""
    add_mock_feed_arguments(parser)
    parser.add_argument(
        "--seed",
        type=seed_arg,
        default=0,
        help="mock feed: the seed (default 0; -2^63 to 2^63-1)",
    )
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[SYMBOL=]FILE",
        help="csv feed: a candle file (repeatable)",
    )
    parser.add_argument(
        "--speed",
        default=DEFAULT_SPEED,
        help=f"feed time per wall time, or 'max' (default {DEFAULT_SPEED}: an hour a second)",
    )


def speed_of(text: str) -> float | None:
    """``--speed``: feed time per wall time, or None for 'max' (as fast as it goes)."""
    if text == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise UsageError(f"--speed {text!r}: a positive number or 'max'") from None
    if not speed > 0 or speed == float("inf"):
        raise UsageError(f"--speed {text!r}: a positive number or 'max'")
    return speed


def sources_of(args: argparse.Namespace) -> list[CandleSource]:
    """The sources ``--feed`` and its options name: candle files or a generated feed."""
    if args.feed == "csv":
        if not args.data:
            raise UsageError("the csv feed needs --data FILE (repeatable)")
        if args.count is not None or args.start is not None:
            raise UsageError("--count and --start are for the mock feed")
        sources: list[CandleSource] = [
            CsvCandleSource(*parse_data_spec(spec)) for spec in args.data
        ]
        symbols = [s.symbol for s in sources]
        if len(set(symbols)) != len(symbols):
            raise UsageError(f"two --data files for the same symbol: {', '.join(symbols)}")
        return sources
    if args.data:
        raise UsageError("--data is for the csv feed")
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if not symbols:
        raise UsageError("--symbols: give at least one symbol")
    start = DEFAULT_START if args.start is None else time_arg(args.start)
    return list(
        mock_sources(symbols, seed=args.seed, interval=args.interval, start=start, count=args.count)
    )
