"""Fuzzing the CSV source: whatever the file, it is refused whole with ``DataSourceError``,
or every data line becomes exactly one candle or one dead letter, and every candle is valid.

Files are built from valid rows, mutated rows, random bytes, odd line ends, Unicode, huge,
negative and non-finite numbers, duplicate, backwards and off-grid timestamps, and read in
tiny chunks and in one piece: the outcome must not depend on where the chunks fall.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from streams import csv_source as cs
from streams.csv_source import BadRow, CsvCandleSource, DataSourceError, ReadLimits
from tests.support.csv_files import HEADER
from tests.support.fuzzing import fuzz_settings

REASONS = {value for name, value in vars(cs).items() if name.isupper() and isinstance(value, str)}
REASONS -= {cs.HEADER}

STARTS = [
    *[1_700_000_040_000] * 6,  # milliseconds, mostly
    1_700_000_040,  # seconds
    1_700_000_040_000_000,  # microseconds
    2**64,
    0,
    -1_700_000_040_000,
    cs.MIN_TIMESTAMP_MS,
    cs.MAX_TIMESTAMP_MS - 20 * 60_000,
]
STEPS = [1, 7, 1_000, 60_000, 1_800_000, 86_400_000]
TRICKY = [
    "", " ", "nan", "-nan", "inf", "-Infinity", "1e308", "1e400", "-1", "-0", "0", "1e-300",
    "1e-12", "1e15", "1e18", "1e19", "4_447.5", "\u0664\u0664\u0664\u0667.\u0665",
    "\uff14\uff14\uff14\uff17", "0x10", "1.5.5", "+", "-", ".", "e5", '"1.5"', "'1.5'",
    " 1.5 ", "\t2", "1\x002", str(2**64), str(2**63), "9" * 25, "1\u00a0", '""',
]  # fmt: skip
KINDS = [
    "good", "good", "good", "good", "gap", "dup", "back", "off", "mutate", "junk", "blank",
    "empty", "quoted", "spaced", "long", "huge", "not-utf8", "other-interval",
]  # fmt: skip
HEADERS = [
    HEADER, HEADER, HEADER, HEADER, '"' + HEADER.replace(",", '","') + '"', "\ufeff" + HEADER,
    " timestamp_ms , open,high,\tlow,close,volume", "time,o,h,l,c,v", "",
]  # fmt: skip
prices = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False)
odd_fields = (
    st.sampled_from(TRICKY) | st.text(max_size=6) | st.integers().map(str) | st.floats().map(repr)
)


@st.composite
def candle_files(draw: st.DrawFn) -> tuple[bytes, ReadLimits]:
    """A candle file's bytes, and how to read it: chunk size and line limit."""
    start, step = draw(st.sampled_from(STARTS)), draw(st.sampled_from(STEPS))
    limit = draw(st.sampled_from([160, 1 << 20]))  # a small limit still above a good row
    t = 0
    lines: list[bytes] = []

    def good(ts: int) -> list[str]:
        low, a, b, high = sorted(draw(st.lists(prices, min_size=4, max_size=4)))
        o, c = (a, b) if draw(st.booleans()) else (b, a)
        volume = draw(st.floats(min_value=0, max_value=1e6))
        return [str(ts), repr(o), repr(high), repr(low), repr(c), repr(volume)]

    kinds = ["good"] * draw(st.integers(0, 12)) + draw(
        st.lists(st.sampled_from(KINDS), max_size=40)
    )
    for kind in kinds:
        fields: list[str] | None = None
        if kind in ("good", "mutate", "quoted", "spaced", "not-utf8"):
            t += 1
            fields = good(start + t * step)
        elif kind == "gap":
            t += draw(st.integers(2, 5))
            fields = good(start + t * step)
        elif kind == "dup":
            fields = good(start + t * step)
        elif kind == "back":
            fields = good(start + (t - draw(st.integers(1, 3))) * step)
        elif kind == "off":
            fields = good(start + t * step + draw(st.integers(1, max(1, step - 1))))
        elif kind == "other-interval":
            t += 1
            fields = good(start + t * step + draw(st.sampled_from([1, 60_000, step // 30 or 1])))
        elif kind == "huge":
            t += 1
            fields = good(start + t * step)
            fields[draw(st.integers(1, 5))] = draw(st.sampled_from(["1e308", "1e300", "1e-300"]))
        if fields is not None and kind == "mutate":
            fields[draw(st.integers(0, 5))] = draw(odd_fields)
        if fields is not None and kind == "quoted":
            fields = [f'"{f}"' for f in fields]
        if fields is not None and kind == "spaced":
            fields = [f" {f}\t" for f in fields]
        if kind == "junk":
            line = draw(st.binary(max_size=30))
        elif kind == "blank":
            line = draw(st.sampled_from([" ", "\t", " \t ", "\u3000"])).encode()
        elif kind == "empty":
            line = b""
        elif kind == "long":  # around the small limit (a MiB read a byte at a time is slow)
            line = b"1," * (min(limit, 160) // 2 + draw(st.integers(-2, 3)))
        else:
            assert fields is not None
            line = ",".join(fields).encode()
            if kind == "not-utf8":
                cut = draw(st.integers(0, len(line)))
                line = line[:cut] + draw(st.sampled_from([b"\xff", b"\xe9", b"\xc3"])) + line[cut:]
        lines.append(line)
    ends = st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"])
    body = draw(st.sampled_from(HEADERS)).encode() + draw(ends)
    body += b"".join(line + draw(ends) for line in lines)
    if lines and draw(st.booleans()):
        body = body.rstrip(b"\r\n")  # no line end after the last line
    chunk = draw(st.sampled_from([1, 3, 7, 64, 1 << 22]))
    return body, ReadLimits(chunk_bytes=chunk, max_line_bytes=limit)


def _data_lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of every non-empty line after the first, split independently of
    the source: any of CRLF, CR or LF ends a line."""
    for number, line in enumerate(re.split(rb"\r\n|\r|\n", body)[1:], start=2):
        if line:
            yield number, line


def _outcome(path: Path, limits: ReadLimits) -> object:
    try:
        source = CsvCandleSource("X", path, limits)
    except DataSourceError as exc:
        return str(exc)
    bad: list[BadRow] = []
    candles = list(source.candles(bad.append))
    return source, candles, bad


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "X.csv"


@fuzz_settings(700)
@given(case=candle_files())
def test_every_data_line_is_a_candle_or_a_dead_letter(
    csv_path: Path, case: tuple[bytes, ReadLimits]
) -> None:
    body, limits = case
    csv_path.write_bytes(body)
    outcome = _outcome(csv_path, limits)
    in_one_piece = _outcome(csv_path, ReadLimits(max_line_bytes=limits.max_line_bytes))
    if isinstance(outcome, str):
        event("refused: " + re.sub(r".*X\.csv:? ?|\d+|'.*'", "", outcome)[:40])
        assert in_one_piece == outcome  # refused the same, in one line
        assert "\n" not in outcome
        return
    assert not isinstance(in_one_piece, str)
    source, candles, bad = outcome
    # The same whatever the chunks.
    assert (source.interval_ms, source.first_timestamp) == (
        in_one_piece[0].interval_ms,
        in_one_piece[0].first_timestamp,
    )
    assert (candles, bad) == in_one_piece[1:]

    event("read: " + ("candles" if candles else "no candle"))
    for reason in {b.reason for b in bad}:
        event(f"dead letter: {reason}")
    # Counts add up: each non-empty line is one candle or one dead letter.
    rows = dict(_data_lines(body))
    assert len(candles) + len(bad) == len(rows)
    assert len({b.line for b in bad}) == len(bad) and {b.line for b in bad} <= rows.keys()

    step, first = source.interval_ms, source.first_timestamp
    for before, candle in zip([None, *candles], candles, strict=False):
        assert cs.MIN_TIMESTAMP_MS <= candle.timestamp < cs.MAX_TIMESTAMP_MS
        assert (candle.timestamp - first) % step == 0
        assert before is None or before.timestamp < candle.timestamp
        values = (candle.open, candle.high, candle.low, candle.close, candle.volume)
        assert all(math.isfinite(v) for v in values)
        assert cs.MIN_PRICE <= candle.low <= min(candle.open, candle.close)
        assert max(candle.open, candle.close) <= candle.high <= cs.MAX_PRICE
        assert 0 <= candle.volume <= cs.MAX_VOLUME
        assert candle.interval_ms == step and candle.interval == source.interval
    for row in bad:
        assert row.reason in REASONS
        assert row.timestamp == 0 or cs.MIN_TIMESTAMP_MS <= row.timestamp < cs.MAX_TIMESTAMP_MS
        assert "\x00" not in row.raw
        orjson.dumps(row.raw)  # a dead letter can carry it (no lone surrogate)
        shown = rows[row.line].decode("utf-8", "replace").replace("\x00", "\ufffd")
        if row.reason == cs.LINE_TOO_LONG:
            assert len(rows[row.line]) > limits.max_line_bytes and shown.startswith(row.raw)
        else:
            assert row.raw == shown  # the line as it was
