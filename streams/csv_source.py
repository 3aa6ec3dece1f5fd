"""Candles from CSV files (header ``timestamp_ms,open,high,low,close,volume``).

What a source guarantees (the rules themselves are in docs/input.md):

1. Memory stays flat: the file is read in chunks (4 MiB), however long it is, and no line
   is kept whole beyond a limit (1 MiB): a longer line is a dead letter (``ReadLimits``).
2. Every data line is either a candle or one ``BadRow`` handed to ``on_dead_letter`` with
   its line number and a reason code; only empty lines are not rows. Nothing in a row's
   content makes ``candles()`` raise, wherever the row is in the file.
3. A file that cannot be used at all raises ``DataSourceError`` (one line for the user) when
   the source is opened, before any event is written: unreadable, not a regular file, a
   wrong header, timestamps in another unit, newest first, a single row.
4. Every candle is finite and within the bounds below, ``low <= open, close <= high``, on
   the file's interval grid, strictly later than the one before, and between 2000 and 2100.
5. LF, CRLF and CR line ends give the same rows; numbers are read strictly (ASCII decimal:
   no underscores, no other digits than 0-9, no inner spaces).

The common case stays fast: a chunk is checked once for anything a strict reading would
refuse (``_is_plain``); only chunks that fail the check are screened line by line.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from domain.events import Candle

HEADER = "timestamp_ms,open,high,low,close,volume"

# Timestamps are epoch milliseconds in [2000-01-01, 2100-01-01) UTC.
MIN_TIMESTAMP_MS = 946_684_800_000
MAX_TIMESTAMP_MS = 4_102_444_800_000
# Prices and volumes the engine's arithmetic (quantity * price, sums of closes, fees, the
# statistics) keeps comfortably finite with; beyond them a row is a dead letter.
MIN_PRICE = 1e-12
MAX_PRICE = 1e15
MAX_VOLUME = 1e18
_INFER_ROWS = 1000
_MAX_HEADER_BYTES = 1 << 16
_SYMBOL_IN_NAME = re.compile(r"([A-Za-z0-9]+)[-_]([A-Za-z0-9]+)_\d+[smhdwM]$")
# ASCII bytes that int() and float() accept around or inside a number although a strict
# decimal has none (whitespace, digit-group underscores), and the quote of a quoted field.
_LOOSE = (b" ", b"\t", b"\v", b"\f", b"_", b'"', b"\x1c", b"\x1d", b"\x1e", b"\x1f")
# What a screened-out line becomes: it never parses, and its note says why.
_SCREENED_OUT = b"!"
# How much of an over-long line its dead letter keeps (the dead-letter event keeps 1,000).
_SHOWN_OF_LONG = 1000

# Dead-letter reasons.
UNPARSABLE = "UNPARSABLE"
NOT_UTF8 = "NOT_UTF8"
BLANK_LINE = "BLANK_LINE"
LINE_TOO_LONG = "LINE_TOO_LONG"
NON_FINITE_VALUE = "NON_FINITE_VALUE"
NEGATIVE_VALUE = "NEGATIVE_VALUE"
ZERO_PRICE = "ZERO_PRICE"
PRICE_OUT_OF_RANGE = "PRICE_OUT_OF_RANGE"
VOLUME_OUT_OF_RANGE = "VOLUME_OUT_OF_RANGE"
HIGH_BELOW_LOW = "HIGH_BELOW_LOW"
OHLC_OUT_OF_RANGE = "OHLC_OUT_OF_RANGE"
TIMESTAMP_OUT_OF_RANGE = "TIMESTAMP_OUT_OF_RANGE"
DUPLICATE_TIMESTAMP = "DUPLICATE_TIMESTAMP"
BACKWARDS_TIMESTAMP = "BACKWARDS_TIMESTAMP"
OFF_GRID_TIMESTAMP = "OFF_GRID_TIMESTAMP"
INTERVAL_CHANGED = "INTERVAL_CHANGED"


class DataSourceError(ValueError):
    """A data file that cannot be used at all; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be used. ``timestamp`` is the row's own time when it could be
    read and lies in range, otherwise that of the last good row before it (0 at the start
    of the file)."""

    source: str
    line: int
    raw: str
    reason: str
    timestamp: int


DeadLetterSink = Callable[[BadRow], None]


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """How a file is read: ``chunk_bytes`` at a time; a line longer than ``max_line_bytes``
    is a dead letter (``LINE_TOO_LONG``), never held whole. Neither changes which rows
    are candles (tests cut files into tiny chunks to show it), only memory and speed."""

    chunk_bytes: int = 1 << 22
    max_line_bytes: int = 1 << 20


DEFAULT_LIMITS = ReadLimits()


# Per block, the screened lines by line number: the line as it was, and why it was
# screened out ("" when it was only rewritten to strict fields, e.g. unquoted).
_Notes = dict[int, tuple[bytes, str]]


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


class CsvCandleSource:
    """One CSV file of one symbol. Opening it checks the file and the header and infers
    the interval and its grid from the first data rows."""

    def __init__(self, symbol: str, path: Path, limits: ReadLimits = DEFAULT_LIMITS) -> None:
        self.symbol = symbol
        self.path = path
        self.name = path.name
        self.limits = limits
        try:
            self.size = _regular_file_size(path)
            with open(path, "rb") as handle:
                digest = hashlib.sha256()
                while chunk := handle.read(limits.chunk_bytes):
                    digest.update(chunk)
                self.sha256 = digest.hexdigest()
                handle.seek(0)
                self._data_start = _skip_header(handle, path)
                handle.seek(self._data_start)
                head, whole = _head(handle, limits)
        except FileNotFoundError:
            raise DataSourceError(f"cannot read {path}: no such file") from None
        except PermissionError:
            raise DataSourceError(f"cannot read {path}: permission denied") from None
        except OSError as exc:
            raise DataSourceError(f"cannot read {path}: {exc.strerror or exc}") from None
        self.interval_ms, self.first_timestamp = _infer_grid(path, head, whole)
        self.interval = format_interval(self.interval_ms)

    def candles(
        self,
        on_dead_letter: DeadLetterSink,
        on_progress: Callable[[int], None] | None = None,
    ) -> Iterator[Candle]:
        """Valid candles in file order; every other non-empty line goes to ``on_dead_letter``."""
        symbol, interval, step, name = self.symbol, self.interval, self.interval_ms, self.name
        first, end = self.first_timestamp, MAX_TIMESTAMP_MS
        lowest, highest, most = MIN_PRICE, MAX_PRICE, MAX_VOLUME
        last_ts: int | None = None
        next_ts = first  # the common case: each candle one interval after the last
        line_no = 1
        with open(self.path, "rb") as handle:
            handle.seek(self._data_start)
            for lines, notes in _blocks(handle, self.limits, on_progress):
                for line in lines:
                    line_no += 1
                    try:
                        ts_text, o_text, h_text, l_text, c_text, v_text = line.split(b",")
                        ts = int(ts_text)
                        o = float(o_text)
                        h = float(h_text)
                        lo = float(l_text)
                        c = float(c_text)
                        v = float(v_text)
                    except ValueError:
                        if line:
                            raw, reason = notes.get(line_no) or (line, "")
                            reason = reason or UNPARSABLE
                            on_dead_letter(BadRow(name, line_no, _shown(raw), reason, last_ts or 0))
                        continue
                    if not (
                        lowest <= lo <= o <= h <= highest and lo <= c <= h and 0.0 <= v <= most
                    ):
                        reason = _value_reason(line)
                        on_dead_letter(_bad_row(name, line_no, line, notes, reason, ts, last_ts))
                        continue
                    if ts != next_ts or ts >= end:  # a gap, a bad time, or 2100 reached
                        reason = _timestamp_reason(ts, last_ts, first, step)
                        if reason:
                            bad = _bad_row(name, line_no, line, notes, reason, ts, last_ts)
                            on_dead_letter(bad)
                            continue
                    last_ts = ts
                    next_ts = ts + step
                    yield Candle(symbol, ts, o, h, lo, c, v, interval, step)


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


# -- the file ---------------------------------------------------------------------------------


def _regular_file_size(path: Path) -> int:
    """The size of ``path``, refusing anything but a regular file before it is opened: a
    FIFO would block the open, /dev/zero or /dev/urandom would never end."""
    status = os.stat(path)
    if stat.S_ISDIR(status.st_mode):
        raise DataSourceError(f"cannot read {path}: it is a directory")
    if not stat.S_ISREG(status.st_mode):
        kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
        kind = next((name for test, name in kinds if test(status.st_mode)), "a special file")
        raise DataSourceError(f"cannot read {path}: it is {kind}, not a regular file")
    return status.st_size


def _skip_header(handle: BinaryIO, path: Path) -> int:
    """Check the header line; the offset where the data lines start."""
    start = handle.read(_MAX_HEADER_BYTES)
    ends = [i for i in (start.find(b"\n"), start.find(b"\r")) if i >= 0]
    if ends:
        cut = min(ends)
        line, after = start[:cut], cut + (2 if start[cut : cut + 2] == b"\r\n" else 1)
    elif len(start) < _MAX_HEADER_BYTES:
        line, after = start, len(start)  # a header and nothing else
    else:
        raise DataSourceError(
            f"{path}: expected the header {HEADER!r}, found no line end in the first "
            f"{_MAX_HEADER_BYTES // 1024} KiB"
        )
    try:
        text = line.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise DataSourceError(f"cannot read {path}: not a UTF-8 text file") from None
    names = [_unquoted(name.strip(" \t")) for name in text.split(",")]
    if ",".join(names) != HEADER:
        shown = text.strip()[:80] or "an empty file"
        raise DataSourceError(f"{path}: expected the header {HEADER!r}, found {shown!r}")
    return after


def _unquoted(field: str) -> str:
    return field[1:-1] if len(field) >= 2 and field[0] == field[-1] == '"' else field


def _head(handle: BinaryIO, limits: ReadLimits) -> tuple[list[bytes], bool]:
    """The first data lines (as ``candles()`` reads them) and whether they are all there is."""
    lines: list[bytes] = []
    blocks = _blocks(handle, limits, None)
    for block, _notes in blocks:
        lines.extend(block)
        if len(lines) >= _INFER_ROWS:
            return lines[:_INFER_ROWS], False
    return lines, True


def _blocks(
    handle: BinaryIO, limits: ReadLimits, on_progress: Callable[[int], None] | None
) -> Iterator[tuple[list[bytes], _Notes]]:
    """The data lines a chunk at a time, with line ends made ``\\n`` (CRLF and a lone CR
    alike) and, in a chunk that is not plain, each line screened (see ``_screen``)."""
    rest = b""
    line_no = 1  # the header's
    overlong = False  # inside a line too long to keep, already reported
    limit = limits.max_line_bytes
    while chunk := handle.read(limits.chunk_bytes):
        block, held_cr = _with_newlines(rest + chunk)
        lines = block.split(b"\n")
        rest = lines.pop()
        if overlong:
            if not lines:
                rest = b""
            else:
                del lines[0]  # the end of the long line
                overlong = False
        notes: _Notes = {}
        if _may_hold_long_lines(block, limit):
            _screen_long_lines(lines, line_no, notes, limit)
        if len(rest) > limit:
            lines.append(_SCREENED_OUT)
            notes[line_no + len(lines)] = (_start_of(rest, limit), LINE_TOO_LONG)
            rest, overlong = b"", True
        if held_cr:
            rest += b"\r"
        if not _is_plain(block):
            _screen_lines(lines, line_no, notes)
        yield lines, notes
        line_no += len(lines)
        if on_progress is not None:
            on_progress(len(chunk))
    rest = rest.removesuffix(b"\r")  # a last line ended by a lone CR
    if rest and not overlong:  # a last line without a line end (never longer than the limit)
        lines, notes = [rest], {}
        if not _is_plain(rest):
            _screen_lines(lines, line_no, notes)
        yield lines, notes


def _with_newlines(block: bytes) -> tuple[bytes, bool]:
    """``block`` with CRLF and a lone CR made ``\\n``; and whether a CR at its very end was
    held back (it may be the first half of a CRLF that the next chunk completes)."""
    if b"\r" not in block:
        return block, False
    held_cr = block.endswith(b"\r")
    if held_cr:
        block = block[:-1]
    return block.replace(b"\r\n", b"\n").replace(b"\r", b"\n"), held_cr


def _may_hold_long_lines(block: bytes, limit: int) -> bool:
    """False when no line ended in ``block`` is longer than ``limit``: every
    half-limit window up to the last line end holds a line end, so no two line ends are
    further apart than the limit. A few searches a chunk instead of a look at every line."""
    half = max(1, limit // 2)
    end = block.rfind(b"\n")
    return any(block.find(b"\n", i, i + half) < 0 for i in range(0, end, half))


def _start_of(line: bytes, limit: int) -> bytes:
    """What a dead letter shows of an over-long line: the same however the line was cut."""
    return line[: min(_SHOWN_OF_LONG, limit)]


def _screen_long_lines(lines: list[bytes], line_no: int, notes: _Notes, limit: int) -> None:
    for i, line in enumerate(lines):
        if len(line) > limit:
            lines[i] = _SCREENED_OUT
            notes[line_no + 1 + i] = (_start_of(line, limit), LINE_TOO_LONG)


# -- strict reading ---------------------------------------------------------------------------


def _is_plain(data: bytes) -> bool:
    """Whether int() and float() read every field in ``data`` strictly: ASCII only, and no
    byte they would quietly skip (whitespace, underscores) or that needs unquoting."""
    return data.isascii() and not any(loose in data for loose in _LOOSE)


def _screen_lines(lines: list[bytes], line_no: int, notes: _Notes) -> None:
    """Rewrite, in place, each line that is not plain: to its strict fields, or to a line
    that never parses, noting the original and the reason by line number."""
    for i, line in enumerate(lines):
        if not line or _is_plain(line):
            continue
        strict, reason = _screen(line)
        lines[i] = strict if strict is not None else _SCREENED_OUT
        notes[line_no + 1 + i] = (line, reason)


def _screen(line: bytes) -> tuple[bytes | None, str]:
    """A line that is not plain as strict fields, (fields, ""), or (None, reason): fields
    may have spaces or tabs around them and be quoted whole ("1.5"); nothing else."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, NOT_UTF8
    if not text.strip():
        return None, BLANK_LINE
    if not line.isascii():
        return None, UNPARSABLE  # other digits, other spaces: numbers are ASCII decimal
    fields = []
    for spaced in line.split(b","):
        field = spaced.strip(b" \t")
        if len(field) >= 2 and field[0] == field[-1] == ord('"'):
            field = field[1:-1]
        if not _is_plain(field):
            return None, UNPARSABLE
        fields.append(field)
    return b",".join(fields), ""


def _shown(raw: bytes) -> str:
    """A line as a dead letter carries it: UTF-8 where it is, NUL (which Postgres text
    cannot hold) and undecodable bytes as U+FFFD."""
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


# -- why a row is bad -------------------------------------------------------------------------


def _bad_row(
    name: str, line_no: int, line: bytes, notes: _Notes, reason: str, ts: int, last_ts: int | None
) -> BadRow:
    raw = notes[line_no][0] if line_no in notes else line
    in_range = MIN_TIMESTAMP_MS <= ts < MAX_TIMESTAMP_MS
    return BadRow(name, line_no, _shown(raw), reason, ts if in_range else (last_ts or 0))


def _value_reason(line: bytes) -> str:
    """Why a row whose fields all read failed the bounds (only called for such rows)."""
    texts = line.split(b",")[1:]
    values = [float(text) for text in texts]
    if any(not math.isfinite(v) and b"n" in t.lower() for t, v in zip(texts, values, strict=True)):
        return NON_FINITE_VALUE  # nan, inf, infinity
    if any(v < 0 for v in values):
        return NEGATIVE_VALUE
    *prices, volume = values
    if min(prices) == 0:
        return ZERO_PRICE
    if not all(MIN_PRICE <= p <= MAX_PRICE for p in prices):
        return PRICE_OUT_OF_RANGE
    if not volume <= MAX_VOLUME:
        return VOLUME_OUT_OF_RANGE
    _open, high, low, _close = prices
    if high < low:
        return HIGH_BELOW_LOW
    return OHLC_OUT_OF_RANGE


def _timestamp_reason(ts: int, last_ts: int | None, first: int, step: int) -> str:
    """Why a row that is not the next candle on the grid is bad; "" for a gap of whole
    intervals, which is fine."""
    if not MIN_TIMESTAMP_MS <= ts < MAX_TIMESTAMP_MS:
        return TIMESTAMP_OUT_OF_RANGE
    previous = first if last_ts is None else last_ts  # no candle yet: the grid's start
    if (ts - first) % step:
        return INTERVAL_CHANGED if 0 < ts - previous < step else OFF_GRID_TIMESTAMP
    if ts == previous:
        return DUPLICATE_TIMESTAMP
    if ts < previous:
        return BACKWARDS_TIMESTAMP
    return ""


# -- the interval -----------------------------------------------------------------------------


def _infer_grid(path: Path, head: list[bytes], whole: bool) -> tuple[int, int]:
    """(interval in ms, the first timestamp on its grid) from the first data lines: the
    most common step between their timestamps (ties to the smallest, so gaps never widen
    it) and the grid most of them are on."""
    rows = 0
    stamps: list[int] = []
    outside: list[tuple[int, int]] = []  # (line, timestamp) out of range
    for line_no, line in enumerate(head, start=2):
        if not line:
            continue
        rows += 1
        try:
            ts = int(line.split(b",", 1)[0])
        except ValueError:
            continue
        if MIN_TIMESTAMP_MS <= ts < MAX_TIMESTAMP_MS:
            stamps.append(ts)
        else:
            outside.append((line_no, ts))
    if rows == 0:
        raise DataSourceError(f"{path}: no data rows after the header")
    if not stamps and outside:
        raise DataSourceError(_unit_hint(path, *outside[0]))
    if rows == 1 and whole:
        raise DataSourceError(
            f"{path}: only one data row; the candle interval is inferred from the timestamps, "
            "so a file needs at least two rows"
        )
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    later = Counter(s for s in steps if s > 0)
    earlier = sum(1 for s in steps if s < 0)
    if earlier > later.total():
        raise DataSourceError(
            f"{path}: the rows are in descending time order (newest first); "
            "sort the file oldest first"
        )
    if not later:
        where = f"the first {rows:,} data rows" if not whole else f"its {rows:,} data rows"
        raise DataSourceError(
            f"{path}: cannot infer the candle interval: fewer than two different usable "
            f"timestamps in {where}"
        )
    interval = min(later.items(), key=lambda item: (-item[1], item[0]))[0]
    phase = Counter(ts % interval for ts in stamps).most_common(1)[0][0]
    return interval, next(ts for ts in stamps if ts % interval == phase)


def _unit_hint(path: Path, line_no: int, ts: int) -> str:
    digits = str(abs(ts))
    shown = ("-" if ts < 0 else "") + (
        digits if len(digits) <= 24 else f"{digits[:20]}... ({len(digits)} digits)"
    )
    guess = "it is no time between 2000 and 2100 in seconds, milliseconds, microseconds or "
    guess += "nanoseconds either"
    for unit, scaled in (
        ("seconds", ts * 1000),
        ("microseconds", ts // 1000),
        ("nanoseconds", ts // 1_000_000),
    ):
        if MIN_TIMESTAMP_MS <= scaled < MAX_TIMESTAMP_MS:
            guess = f"it looks like {unit}"
            break
    return (
        f"{path}: timestamp {shown} on line {line_no} is not epoch milliseconds between "
        f"2000-01-01 and 2100-01-01 UTC ({guess}); timestamp_ms must be epoch milliseconds"
    )
