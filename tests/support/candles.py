"""Candle files built from a list of closes, for tests that need an exact price path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

START_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z (a grid is relative to the first row)


def write_closes(
    path: Path, closes: Sequence[float], *, start_ms: int = START_MS, interval_ms: int = 60_000
) -> Path:
    """A candle CSV whose candle ``i`` opens at close ``i - 1`` (the first at its own close)
    and closes at ``closes[i]``, on the ``interval_ms`` grid from ``start_ms``."""
    lines = ["timestamp_ms,open,high,low,close,volume"]
    previous = closes[0]
    for i, close in enumerate(closes):
        low, high = min(previous, close), max(previous, close)
        lines.append(f"{start_ms + i * interval_ms},{previous},{high},{low},{close},1")
        previous = close
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def candle_number(timestamp_ms: int, *, start_ms: int = START_MS, interval_ms: int = 60_000) -> int:
    """The number of the candle whose close ``timestamp_ms`` is (a signal's timestamp)."""
    return (timestamp_ms - start_ms) // interval_ms - 1
