"""Candles from CSV files (header ``timestamp_ms,open,high,low,close,volume``).

Rows are read in chunks, so memory stays flat however long the file is. A row that cannot
be used is handed to ``on_dead_letter`` with its line number and a reason, and reading goes
on; a file that cannot be read at all raises ``DataSourceError`` before any event is written.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from domain.events import Candle

HEADER = "timestamp_ms,open,high,low,close,volume"
_CHUNK = 1 << 22
_INFER_ROWS = 1000
_INF = math.inf
_SYMBOL_IN_NAME = re.compile(r"([A-Za-z0-9]+)[-_]([A-Za-z0-9]+)_\d+[smhdwM]$")

# Dead-letter reasons.
UNPARSABLE = "UNPARSABLE"
NON_FINITE_VALUE = "NON_FINITE_VALUE"
NEGATIVE_VALUE = "NEGATIVE_VALUE"
ZERO_PRICE = "ZERO_PRICE"
HIGH_BELOW_LOW = "HIGH_BELOW_LOW"
OHLC_OUT_OF_RANGE = "OHLC_OUT_OF_RANGE"
DUPLICATE_TIMESTAMP = "DUPLICATE_TIMESTAMP"
BACKWARDS_TIMESTAMP = "BACKWARDS_TIMESTAMP"


class DataSourceError(ValueError):
    """A data file that cannot be used at all; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be used. ``timestamp`` is the row's own time when it could be
    read, otherwise that of the last good row before it (0 at the start of the file)."""

    source: str
    line: int
    raw: str
    reason: str
    timestamp: int


DeadLetterSink = Callable[[BadRow], None]


class CandleSource(Protocol):
    """One symbol's candles in time order, described well enough to name the run they
    drive: a CSV file (``CsvCandleSource``) or a generated feed (``streams.mock_feed``)."""

    symbol: str
    name: str
    sha256: str
    interval: str
    interval_ms: int
    first_timestamp: int

    def candles(
        self,
        on_dead_letter: DeadLetterSink,
        on_progress: Callable[[int], None] | None = None,
    ) -> Iterator[Candle]: ...


def infer_symbol(path: Path) -> str:
    """``..._BTC-USD_30m.csv`` -> ``BTC_USD``; the file's stem when nothing fits."""
    stem = path.stem
    match = _SYMBOL_IN_NAME.search(stem)
    if match:
        return f"{match.group(1).upper()}_{match.group(2).upper()}"
    return stem


def format_interval(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_data_spec(spec: str) -> tuple[str, Path]:
    """``SYMBOL=FILE`` or ``FILE`` -> (symbol, path)."""
    if "=" in spec:
        symbol, _, path = spec.partition("=")
        if not symbol or not path:
            raise DataSourceError(f"--data {spec!r}: expected SYMBOL=FILE or FILE")
        return symbol, Path(path)
    return infer_symbol(Path(spec)), Path(spec)


def _bad_reason(parts: list[str]) -> str:
    """Why a row failed the fast check (only called for rows that did)."""
    try:
        values = [float(p) for p in parts[1:]]
        int(parts[0])
    except ValueError:
        return UNPARSABLE
    if any(not math.isfinite(v) for v in values):
        return NON_FINITE_VALUE
    if any(v < 0 for v in values):
        return NEGATIVE_VALUE
    open_, high, low, close, _volume = values
    if min(open_, high, low, close) == 0:
        return ZERO_PRICE
    if high < low:
        return HIGH_BELOW_LOW
    return OHLC_OUT_OF_RANGE


class CsvCandleSource:
    """One CSV file of one symbol. Opening it checks the header and infers the interval."""

    def __init__(self, symbol: str, path: Path) -> None:
        self.symbol = symbol
        self.path = path
        self.name = path.name
        try:
            self.size = path.stat().st_size
            with open(path, "rb") as handle:
                digest = hashlib.sha256()
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
            self.sha256 = digest.hexdigest()
            with open(path, encoding="utf-8", newline="") as handle:
                header = handle.readline().strip().lstrip("\ufeff")
                head = [handle.readline() for _ in range(_INFER_ROWS)]
        except IsADirectoryError:
            raise DataSourceError(f"cannot read {path}: it is a directory") from None
        except FileNotFoundError:
            raise DataSourceError(f"cannot read {path}: no such file") from None
        except PermissionError:
            raise DataSourceError(f"cannot read {path}: permission denied") from None
        except UnicodeDecodeError:
            raise DataSourceError(f"cannot read {path}: not a UTF-8 text file") from None
        except OSError as exc:
            raise DataSourceError(f"cannot read {path}: {exc.strerror or exc}") from None
        if header.replace(" ", "") != HEADER:
            shown = header[:80] or "an empty file"
            raise DataSourceError(f"{path}: expected the header {HEADER!r}, found {shown!r}")
        self.interval_ms, self.first_timestamp = self._infer_interval(head)
        self.interval = format_interval(self.interval_ms)

    def _infer_interval(self, head: list[str]) -> tuple[int, int]:
        stamps: list[int] = []
        for line in head:
            try:
                stamps.append(int(line.split(",", 1)[0]))
            except ValueError:
                continue
        steps = Counter(b - a for a, b in itertools.pairwise(stamps) if b > a)
        if not steps:
            raise DataSourceError(
                f"{self.path}: cannot infer the candle interval: fewer than two usable "
                "timestamps at the start of the file"
            )
        # The most common step; ties go to the smallest, so gaps never widen the interval.
        interval = min(steps.items(), key=lambda item: (-item[1], item[0]))[0]
        return interval, stamps[0]

    def candles(
        self,
        on_dead_letter: DeadLetterSink,
        on_progress: Callable[[int], None] | None = None,
    ) -> Iterator[Candle]:
        """Valid candles in file order; everything else goes to ``on_dead_letter``."""
        symbol, interval, interval_ms = self.symbol, self.interval, self.interval_ms
        name = self.name
        last_ts: int | None = None
        line_no = 1
        for lines in self._line_batches(on_progress):
            for line in lines:
                line_no += 1
                parts = line.split(",")
                try:
                    ts_text, o_text, h_text, l_text, c_text, v_text = parts
                    ts = int(ts_text)
                    o = float(o_text)
                    h = float(h_text)
                    lo = float(l_text)
                    c = float(c_text)
                    v = float(v_text)
                except ValueError:
                    if line.strip():
                        raw = line.rstrip("\r")
                        on_dead_letter(BadRow(name, line_no, raw, UNPARSABLE, last_ts or 0))
                    continue
                if not (0.0 < lo <= o <= h < _INF and lo <= c <= h and 0.0 <= v < _INF):
                    reason = _bad_reason(parts)
                    on_dead_letter(BadRow(name, line_no, line.rstrip("\r"), reason, ts))
                    continue
                if last_ts is not None and ts <= last_ts:
                    reason = DUPLICATE_TIMESTAMP if ts == last_ts else BACKWARDS_TIMESTAMP
                    on_dead_letter(BadRow(name, line_no, line.rstrip("\r"), reason, ts))
                    continue
                last_ts = ts
                yield Candle(symbol, ts, o, h, lo, c, v, interval, interval_ms)

    def _line_batches(self, on_progress: Callable[[int], None] | None) -> Iterator[list[str]]:
        """The data lines after the header, a chunk at a time; a last line without newline too."""
        rest = ""
        with open(self.path, encoding="utf-8", errors="replace", newline="") as handle:
            handle.readline()
            while chunk := handle.read(_CHUNK):
                lines = (rest + chunk).split("\n")
                rest = lines.pop()
                yield lines
                if on_progress is not None:
                    on_progress(len(chunk))
        if rest:
            yield [rest]


def merged_candles(
    sources: Sequence[CandleSource],
    on_dead_letter: DeadLetterSink,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Candle]:
    """All sources merged by time; candles at the same time come in symbol order."""
    streams = [s.candles(on_dead_letter, on_progress) for s in sources]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda c: (c.timestamp, c.symbol))
