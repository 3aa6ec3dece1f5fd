"""Candle CSV files row by row, for tests of what the CSV source accepts and refuses."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from streams.csv_source import DEFAULT_LIMITS, BadRow, CsvCandleSource, ReadLimits

HEADER = "timestamp_ms,open,high,low,close,volume"
T0 = 1_700_000_040_000  # 2023-11-14T22:14:00Z, a whole minute
MINUTE = 60_000


def at(i: int, *, step: int = MINUTE) -> int:
    """The open time of candle ``i`` on the grid from ``T0``."""
    return T0 + i * step


def row(i: int, *, step: int = MINUTE, close: float = 1.5) -> str:
    """A valid row for candle ``i`` (open 1, high 2, low 0.5)."""
    return f"{at(i, step=step)},1,2,0.5,{close},10"


def rows(count: int, *, step: int = MINUTE) -> list[str]:
    return [row(i, step=step) for i in range(count)]


def write_csv(path: Path, lines: Iterable[str], *, end: str = "\n", header: str = HEADER) -> Path:
    """``header`` and ``lines``, each ended by ``end`` (LF, CRLF or CR), as UTF-8."""
    path.write_bytes("".join(f"{line}{end}" for line in [header, *lines]).encode())
    return path


def read_csv(
    path: Path, symbol: str = "X", limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[list[int], list[BadRow]]:
    """The candles' timestamps and the dead letters of reading ``path`` whole."""
    bad: list[BadRow] = []
    source = CsvCandleSource(symbol, path, limits)
    stamps = [c.timestamp for c in source.candles(bad.append)]
    return stamps, bad


def reasons(bad: list[BadRow]) -> list[tuple[int, str]]:
    """(line, reason) of each dead letter, in order."""
    return [(b.line, b.reason) for b in bad]
