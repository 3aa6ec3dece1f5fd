"""Odd and hostile candle files (issue 14): each gives a correct run or one clear error line.

Whole-file refusals go through the command line (exit 2, one ``cdb: error:`` line, no log
written); per-row defects are dead letters with their own reason, read through the source
and, for the worst of them, through a whole backtest whose summary counts them.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from cdb.cli import main
from streams import csv_source as cs
from tests.support.csv_files import HEADER, MINUTE, T0, at, read_csv, reasons, row, rows, write_csv

ROOT = Path(__file__).resolve().parent.parent.parent
HALF_HOUR = 30 * MINUTE


def _refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path) -> str:
    """The one error line of a backtest of ``data``, which must write nothing."""
    code = main(["--data-dir", str(tmp_path / "var"), "backtest", "--data", str(data)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("cdb: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "var" / "log").exists()
    return err


# -- whole files refused with one line ---------------------------------------------------------


@pytest.mark.parametrize(
    ("stamps", "message"),
    [
        ([at(i) // 1000 for i in range(5)], "looks like seconds"),
        ([at(i) * 1000 for i in range(5)], "looks like microseconds"),
        ([at(i) * 1_000_000 for i in range(5)], "looks like nanoseconds"),
        ([2**64 + i * MINUTE for i in range(5)], "is no time between 2000 and 2100"),
        ([1_500_000_000_000_000 + i * MINUTE for i in range(5)], "looks like microseconds"),
        ([300_000_000_000_000 + i * MINUTE for i in range(5)], "is no time between"),  # year 11476
        ([-at(i) for i in range(5)], "is no time between"),
    ],
)
def test_timestamps_in_another_unit_or_out_of_range_refuse_the_file_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stamps: list[int], message: str
) -> None:
    data = write_csv(tmp_path / "X.csv", [f"{ts},1,2,0.5,1.5,10" for ts in stamps])
    err = _refused(capsys, tmp_path, data)
    assert message in err
    assert "timestamp_ms must be epoch milliseconds" in err
    assert "on line 2 is not epoch milliseconds between 2000-01-01 and 2100-01-01 UTC" in err


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (rows(50)[::-1], "descending time order (newest first); sort the file oldest first"),
        ([row(0)], "only one data row"),
        ([], "no data rows after the header"),
        ([row(0)] * 3, "cannot infer the candle interval"),
    ],
    ids=["newest-first", "one-row", "no-rows", "one-time"],
)
def test_files_whose_interval_cannot_be_known_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    err = _refused(capsys, tmp_path, write_csv(tmp_path / "X.csv", lines))
    assert message in err


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "/dev/urandom"])
def test_a_file_that_is_not_regular_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        data = tmp_path / "feed.csv"
        os.mkfifo(data)
    else:
        data = Path(kind)
    # In a process of its own: reading any of these used to block or never end.
    argv = ["--data-dir", str(tmp_path / "var"), "backtest", "--data", str(data)]
    done = subprocess.run(
        [sys.executable, "-m", "cdb", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("cdb: error: ") and done.stderr.count("\n") == 1
    expected = "it is a FIFO" if kind == "fifo" else "it is a device"
    assert f"{expected}, not a regular file" in done.stderr


# -- line ends ---------------------------------------------------------------------------------

# Every kind of line, each with its own line end; the comments give the line numbers.
_MIXED: list[tuple[bytes, bytes]] = [
    (HEADER.encode(), b"\r\n"),  # 1
    (row(0).encode(), b"\r"),  # 2
    (f'"{at(1)}","1","2","0.5","1.5","10"'.encode(), b"\r\n"),  # 3: quoted whole
    (f" {at(2)} , 1 ,2,0.5,1.5,\t10".encode(), b"\n"),  # 4: spaces and tabs around
    (b"   ", b"\r"),  # 5: whitespace only
    (b"", b"\r\n"),  # 6: empty, not a row
    (row(3).encode(), b"\n"),  # 7
    (f"{at(4)},1,2,0.5,1.5,1\u0661".encode(), b"\r"),  # 8: an Arabic-Indic digit
    (row(5).encode(), b"\r\n"),  # 9
    (f"{at(6)},1,2,0.5,1.5,1".encode() + b"\xff", b"\n"),  # 10: not UTF-8
    (row(7).encode(), b"\r"),  # 11
    (b"9" * 300, b"\n"),  # 12: longer than the limit
    (row(8).encode(), b"\r"),  # 13
    (b"8" * 300, b""),  # 14: longer than the limit, and no line end
]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_lf_crlf_and_cr_line_ends_give_the_same_candles(tmp_path: Path, end: str) -> None:
    lines = [*rows(2_000), "x,1,2,0.5,1.5,10", row(2_000)]
    stamps, bad = read_csv(write_csv(tmp_path / "X.csv", lines, end=end))
    assert stamps == [at(i) for i in range(2_001)]
    assert reasons(bad) == [(2_002, cs.UNPARSABLE)]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 13, 64, 250, 1 << 22])
def test_chunk_boundaries_change_nothing(tmp_path: Path, chunk: int) -> None:
    """A CRLF split between two chunks, a multi-byte character or a long line across a
    boundary: the same candles and dead letters however the file is cut."""
    path = tmp_path / "X.csv"
    path.write_bytes(b"".join(text + end for text, end in _MIXED))
    stamps, bad = read_csv(path, limits=cs.ReadLimits(chunk_bytes=chunk, max_line_bytes=200))
    assert stamps == [at(i) for i in (0, 1, 2, 3, 5, 7, 8)]
    assert reasons(bad) == [
        (5, cs.BLANK_LINE),
        (8, cs.UNPARSABLE),
        (10, cs.NOT_UTF8),
        (12, cs.LINE_TOO_LONG),
        (14, cs.LINE_TOO_LONG),
    ]
    assert bad[1].raw == f"{at(4)},1,2,0.5,1.5,1\u0661"
    assert bad[2].raw == f"{at(6)},1,2,0.5,1.5,1\ufffd"
    assert bad[3].raw == "9" * 200  # as much as the limit, however the line was cut


# -- numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "\u0664\u0664\u0664\u0667.\u0665",  # Arabic-Indic 4447.5
        "\uff14\uff14\uff14\uff17.\uff15",  # full-width 4447.5
        "4_447.5",
        "4 447.5",
        "4447.5\u00a0",  # a no-break space after it
        "\u20034447.5",  # an em space before it
        "4447.5\v",
        "0x1p3",
        "1e5e5",
        "'1.5'",
        '"1.5',
    ],
)
def test_prices_are_ascii_decimal_only(tmp_path: Path, field: str) -> None:
    lines = [*rows(3), f"{at(3)},1,5000,0.5,{field},10", row(4)]  # line 5: the close
    stamps, bad = read_csv(write_csv(tmp_path / "X.csv", lines))
    assert stamps == [at(i) for i in (0, 1, 2, 4)]
    assert reasons(bad) == [(5, cs.UNPARSABLE)]


_WRITTEN: dict[str, Callable[[int], str]] = {
    "arabic-indic": lambda ts: "".join(chr(0x660 + int(d)) for d in str(ts)),
    "full-width": lambda ts: "".join(chr(0xFF10 + int(d)) for d in str(ts)),
    "underscores": lambda ts: f"{ts:_}",
    "no-break space": lambda ts: f"{ts}\u00a0",
}


@pytest.mark.parametrize("style", sorted(_WRITTEN))
@pytest.mark.parametrize("where", [3, 1_200])  # among the rows the interval comes from, later
def test_timestamps_are_ascii_digits_only(tmp_path: Path, style: str, where: int) -> None:
    lines = rows(where + 2)
    lines[where] = f"{_WRITTEN[style](at(where))},1,2,0.5,1.5,10"
    stamps, bad = read_csv(write_csv(tmp_path / "X.csv", lines))
    assert stamps == [at(i) for i in range(where + 2) if i != where]
    assert reasons(bad) == [(where + 2, cs.UNPARSABLE)]


def test_what_strict_numbers_allow(tmp_path: Path) -> None:
    lines = [
        row(0),
        f"+{at(1)},+1,2.0e0,.5,1.5,1E1",  # signs, exponents, a leading point
        f'"{at(2)}", "1" ,2,0.5,1.5,10',  # whole fields quoted, spaces around
        f"{at(3)},1.,2,0.5,1.5,0",  # a trailing point, zero volume
    ]
    stamps, bad = read_csv(write_csv(tmp_path / "X.csv", lines))
    assert stamps == [at(i) for i in range(4)] and bad == []


def test_a_quoted_file_reads_as_the_plain_one(tmp_path: Path) -> None:
    plain = rows(300)
    quoted = [",".join(f'"{f}"' for f in line.split(",")) for line in plain]
    header = ",".join(f'"{name}"' for name in HEADER.split(","))
    assert read_csv(write_csv(tmp_path / "q.csv", quoted, header=header, end="\r\n")) == (
        read_csv(write_csv(tmp_path / "p.csv", plain))
    )


# -- bounds ------------------------------------------------------------------------------------


def test_prices_and_volumes_the_engine_cannot_carry_are_dead_letters(tmp_path: Path) -> None:
    lines = [
        row(0),
        f"{at(1)},1e308,1e308,1e308,1e308,1",  # line 3
        f"{at(2)},1,2,1e-300,1.5,1",  # line 4: positive but far too small
        f"{at(3)},1,1e400,0.5,1.5,1",  # line 5: overflows to infinity
        f"{at(4)},1,2,0.5,1.5,1e300",  # line 6
        f"{at(5)},1,inf,0.5,1.5,1",  # line 7: a non-finite word
        f"{at(6)},1e-12,1e15,1e-12,1e15,1e18",  # line 8: the bounds themselves are fine
    ]
    stamps, bad = read_csv(write_csv(tmp_path / "X.csv", lines))
    assert stamps == [at(0), at(6)]
    assert reasons(bad) == [
        (3, cs.PRICE_OUT_OF_RANGE),
        (4, cs.PRICE_OUT_OF_RANGE),
        (5, cs.PRICE_OUT_OF_RANGE),
        (6, cs.VOLUME_OUT_OF_RANGE),
        (7, cs.NON_FINITE_VALUE),
    ]


# -- timestamps: range, grid, interval ---------------------------------------------------------


def test_a_later_timestamp_out_of_range_is_one_dead_letter(tmp_path: Path) -> None:
    lines = [
        *rows(3),
        f"{2**64},1,2,0.5,1.5,10",  # line 5
        f"{at(3) * 1000},1,2,0.5,1.5,10",  # line 6: microseconds
        f"{at(4) // 1000},1,2,0.5,1.5,10",  # line 7: seconds
        f"{4_102_444_800_000},1,2,0.5,1.5,10",  # line 8: 2100-01-01, the first time out
        row(5),
    ]
    stamps, bad = read_csv(write_csv(tmp_path / "X.csv", lines))
    assert stamps == [at(i) for i in (0, 1, 2, 5)]
    assert reasons(bad) == [(n, cs.TIMESTAMP_OUT_OF_RANGE) for n in (5, 6, 7, 8)]
    assert {b.timestamp for b in bad} == {at(2)}  # the last good row's, not the wild one


def test_the_interval_is_checked_on_every_row(tmp_path: Path) -> None:
    """A switch from 30m to 1m candles, an off-grid row, gaps of whole intervals."""
    lines = [
        *rows(40, step=HALF_HOUR),
        *(f"{at(39, step=HALF_HOUR) + k * MINUTE},1,2,0.5,1.5,10" for k in range(1, 31)),
        f"{at(45, step=HALF_HOUR) + 1},1,2,0.5,1.5,10",  # 1 ms off the grid
        row(47, step=HALF_HOUR),  # a gap of 7 intervals: fine
    ]
    source = cs.CsvCandleSource("X", write_csv(tmp_path / "X_30m.csv", lines))
    assert (source.interval, source.first_timestamp) == ("30m", T0)
    stamps, bad = read_csv(source.path)
    # The 1m rows: 29 shorter than an interval; the 30th lands on the grid and is kept.
    assert stamps == [at(i, step=HALF_HOUR) for i in (*range(41), 47)]
    assert reasons(bad) == [
        *((n, cs.INTERVAL_CHANGED) for n in range(42, 71)),
        (72, cs.OFF_GRID_TIMESTAMP),
    ]


def test_the_grid_is_the_one_most_rows_are_on(tmp_path: Path) -> None:
    lines = [f"{at(0) + 7},1,2,0.5,1.5,10", *(row(i) for i in range(1, 20))]
    source = cs.CsvCandleSource("X", write_csv(tmp_path / "X.csv", lines))
    assert (source.interval_ms, source.first_timestamp) == (MINUTE, at(1))
    stamps, bad = read_csv(source.path)
    assert stamps == [at(i) for i in range(1, 20)]
    assert reasons(bad) == [(2, cs.OFF_GRID_TIMESTAMP)]


# -- lines -------------------------------------------------------------------------------------


@pytest.mark.parametrize("at_row", [6, 1_501])
def test_a_non_utf8_row_is_one_dead_letter_wherever_it_is(tmp_path: Path, at_row: int) -> None:
    path = tmp_path / "X.csv"
    good = rows(2_000)
    body = "\n".join([HEADER, *good]).encode().split(b"\n")
    body[at_row] = body[at_row].replace(b",10", b",1\xe9")  # latin-1, not UTF-8
    path.write_bytes(b"\n".join(body) + b"\n")
    stamps, bad = read_csv(path)
    assert len(stamps) == 1_999
    assert reasons(bad) == [(at_row + 1, cs.NOT_UTF8)]
    assert bad[0].raw.endswith(",1\ufffd")


def test_whitespace_only_lines_are_dead_letters_empty_lines_are_not_rows(tmp_path: Path) -> None:
    lines = [row(0), " ", "\t", row(1), "", row(2), " \t ", row(3)]
    path = write_csv(tmp_path / "X.csv", lines)
    path.write_bytes(path.read_bytes() + b"\n\n")  # blank lines at the end: nothing at all
    stamps, bad = read_csv(path)
    assert stamps == [at(i) for i in range(4)]
    assert reasons(bad) == [(3, cs.BLANK_LINE), (4, cs.BLANK_LINE), (8, cs.BLANK_LINE)]


def test_a_nul_byte_is_kept_out_of_the_dead_letter_text(tmp_path: Path) -> None:
    stamps, bad = read_csv(write_csv(tmp_path / "X.csv", [row(0), "1\x002", row(1)]))
    assert stamps == [at(0), at(1)]
    assert [(b.reason, b.raw) for b in bad] == [(cs.UNPARSABLE, "1\ufffd2")]


# -- through a whole backtest ------------------------------------------------------------------


def test_a_backtest_counts_every_bad_row_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A timestamp above 2^63 after the first batches of candles once crashed the run
    half-written (at row 30,000 in the report); prices of 1e308 crashed the statistics.
    Now they are dead letters and the run completes."""
    lines = rows(5_001)
    lines[4_999] = f"{2**64},1,2,0.5,1.5,10"
    lines[100] = f"{at(100)},1e308,1e308,1e308,1e308,1"
    lines[200] = f"{at(200) + 1},1,2,0.5,1.5,10"
    lines[300] = f"{at(300)},4_447.5,5000,0.5,1.5,10"
    lines[400] = "  "
    path = tmp_path / "X_1m.csv"
    write_csv(path, lines, end="\r")
    code = main(["--data-dir", str(tmp_path / "var"), "backtest", "--data", str(path), "--json"])
    assert code == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert (summary["candles"], summary["dead_letters"]) == (4_996, 5)
    with sqlite3.connect(tmp_path / "var" / "projections.sqlite") as db:
        stored = db.execute(
            "SELECT line, reason FROM dead_letters WHERE run_id = ? ORDER BY sequence",
            (summary["run_id"],),
        ).fetchall()
    assert stored == [
        (102, cs.PRICE_OUT_OF_RANGE),
        (202, cs.OFF_GRID_TIMESTAMP),
        (302, cs.UNPARSABLE),
        (402, cs.BLANK_LINE),
        (5_001, cs.TIMESTAMP_OUT_OF_RANGE),
    ]


def test_a_file_of_nothing_but_huge_prices_runs_to_zero_candles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(
        tmp_path / "X.csv", [f"{at(i)},1e308,1e308,1e308,1e308,1e308" for i in range(50)]
    )
    code = main(["--data-dir", str(tmp_path / "var"), "backtest", "--data", str(path), "--json"])
    assert code == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert (summary["candles"], summary["dead_letters"]) == (0, 50)
