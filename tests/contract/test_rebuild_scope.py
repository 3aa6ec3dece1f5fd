"""A rebuild replaces the rows of its own log's runs only, on SQLite and on Postgres; rebuilds
of one store take turns.

Several logs (data directories) may project into one store. These tests give each its own
runs, rebuild one, and hold every other log's rows to a fresh projection of that log into a
store of its own (the projection digest is the same on every backend).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from cdb.cli import main
from domain.run_config import BacktestConfig
from projections import tables
from projections.digest import projection_digest
from projections.projector import catch_up, checkpoints_of, projector_name
from projections.rebuild import rebuild
from projections.store import open_store, sqlite_url
from streams.backtest import run_backtest
from streams.csv_source import CsvCandleSource
from streams.embedded_log import EmbeddedLog
from streams.log_port import describe
from tests.support.rebuilds import PausingLog, btc_slice, postgres_schema

CONFIG = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 5, "slow": 20})
# Run ids of this module: distinct from every other test's in the shared Postgres database.
_names = itertools.count()


def _run_id(label: str) -> str:
    return f"scope-{next(_names)}-{label}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store that several data directories share: a SQLite file of its own, or the
    session's Postgres database (which other tests' runs share too)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.sqlite'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _backtest(
    capsys: pytest.CaptureFixture[str], data_dir: Path, store: str, csv: Path, run_id: str
) -> dict[str, Any]:
    argv = ["--data-dir", str(data_dir), "--store", store, "backtest", "--data", str(csv)]
    assert main([*argv, "--run-id", run_id, "--json", "--no-progress"]) == 0
    summary: dict[str, Any] = orjson.loads(capsys.readouterr().out)
    return summary


def _reference(log_root: Path, where: Path) -> Engine:
    """A fresh projection of the log at ``log_root`` into a SQLite store of its own."""
    where.mkdir(parents=True)
    engine = open_store(sqlite_url(where))
    with EmbeddedLog(log_root) as log:
        catch_up(log, engine)
    return engine


def _rows_of(engine: Engine, run_id: str) -> int:
    with engine.connect() as conn:
        return sum(
            conn.execute(
                select(func.count()).select_from(table).where(table.c.run_id == run_id)
            ).scalar_one()
            for table in tables.READ_MODELS
        )


def _alert(run_id: str, sequence: int) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "sequence": sequence,
        "timestamp": 0,
        "level": "INFO",
        "code": "PLANTED",
        "message": "a row no event of this log writes",
        "symbol": None,
    }


def test_a_rebuild_replaces_only_the_rows_of_its_own_logs_runs(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Logs A and B share a store; `cdb --data-dir B projections rebuild` (all tables, then
    one) leaves A's runs as a fresh projection of A has them, and A's checkpoints where
    they were; B's own runs are replaced: a row of B's run that no event of B writes, and
    a run the store records as B's that B's log no longer holds, are gone."""
    a, b = tmp_path / "a", tmp_path / "b"
    run_a, run_b, orphan = _run_id("a"), _run_id("b"), _run_id("of-no-log")
    csv_a, csv_b = btc_slice(tmp_path, 0, 2_000), btc_slice(tmp_path, 2_000, 2_000)
    _backtest(capsys, a, store_url, csv_a, run_a)
    _backtest(capsys, b, store_url, csv_b, run_b)
    shared = open_store(store_url)
    try:
        with EmbeddedLog(a / "log") as log_a, EmbeddedLog(b / "log") as log_b:
            projector_a, projector_b = projector_name(log_a), projector_name(log_b)
        gone = _run_id("gone-from-b")
        with shared.begin() as conn:
            planted = [_alert(run_b, 10**9), _alert(gone, 0), _alert(orphan, 0)]
            conn.execute(tables.alerts.insert(), planted)
            conn.execute(
                tables.projected_runs.insert(), [{"projector": projector_b, "run_id": gone}]
            )
            checkpoints_a = checkpoints_of(conn, projector_a)
        reference_a = _reference(a / "log", tmp_path / "reference-a")
        reference_b = _reference(b / "log", tmp_path / "reference-b")

        for only in ([], ["--projection", "alerts"], ["--projection", "trades"]):
            rebuilt = ["--data-dir", str(b), "--store", store_url, "projections", "rebuild"]
            assert main([*rebuilt, *only, "--run-id", run_a]) == 0, only
            assert capsys.readouterr().out.strip() == projection_digest(reference_a, run_a)
            assert projection_digest(shared, run_a) == projection_digest(reference_a, run_a)
            assert projection_digest(shared, run_b) == projection_digest(reference_b, run_b)
            assert _rows_of(shared, run_a) == _rows_of(reference_a, run_a) > 2_000
            assert _rows_of(shared, gone) == 0, only
            assert _rows_of(shared, orphan) == 1, only  # no log's run: kept
            with shared.connect() as conn:
                assert checkpoints_of(conn, projector_a) == checkpoints_a
                mine = select(tables.projected_runs.c.run_id).where(
                    tables.projected_runs.c.projector == projector_b
                )
                assert set(conn.execute(mine).scalars()) == {run_b}
        with EmbeddedLog(a / "log") as log_a:
            assert catch_up(log_a, shared).events == 0  # A's projector has nothing to do
        reference_a.dispose()
        reference_b.dispose()
    finally:
        shared.dispose()


def _written(log: EmbeddedLog) -> dict[tuple[str, int], int]:
    return {(t.name, p): end for t in describe(log) for p, end in enumerate(t.end_offsets)}


# How many candles each of A's three runs and B's one run have: A's rows fewer than B's
# (the rebuild copies them into its shadows) or more (it replaces B's rows in the live
# tables and leaves A's where they are).
SIZES = {"copied": (400, 1_500), "left in place": (1_500, 400)}


def _candles_table(engine: Engine) -> int:
    """The identity of the live candles table: a swap puts another table in its place."""
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT 'candles'::regclass::oid").scalar_one())


@pytest.mark.parametrize("kept", sorted(SIZES))
@pytest.mark.parametrize("workers", [1, 2])
def test_rows_another_log_commits_during_a_postgres_rebuild_survive_it(
    postgres_url: str, tmp_path: Path, workers: int, kept: str
) -> None:
    """While log B is rebuilt (in one process or two), log A's projector commits A's
    second run (the rebuild paused halfway), then its third, in small batches, while the
    rebuild goes on to swap its tables in. A's three runs end up as a fresh projection of
    A has them, and so does B's; whether A's rows were copied into the rebuild's shadows or
    left in place in the live tables."""
    a_size, b_size = SIZES[kept]
    first = [0, a_size, 2 * a_size, 3 * a_size]
    sizes = [a_size, a_size, a_size, b_size]
    sources = [
        CsvCandleSource("BTC_USD", btc_slice(tmp_path, f, n))
        for f, n in zip(first, sizes, strict=True)
    ]
    run_ids = [_run_id(f"{n}") for n in range(4)]
    first_of_a: dict[tuple[str, int], int] = {}
    with EmbeddedLog(tmp_path / "a" / "log") as log_a, EmbeddedLog(tmp_path / "b" / "log") as log_b:
        for n in (0, 1, 2):
            run_backtest(CONFIG, [sources[n]], log_a, run_id=run_ids[n])
            first_of_a = first_of_a or _written(log_a)
        run_backtest(CONFIG, [sources[3]], log_b, run_id=run_ids[3])
        second_of_a = _written(log_a)
    with postgres_schema(postgres_url, "cdb_rebuild_scope") as store_url:
        engine = open_store(store_url)
        try:
            with (
                EmbeddedLog(tmp_path / "a" / "log") as log_a,
                EmbeddedLog(tmp_path / "b" / "log") as log_b,
            ):
                catch_up(log_a, engine, until=first_of_a)  # A's first run
                catch_up(log_b, engine)
                candles = _candles_table(engine)
                paused = PausingLog(log_b, topic="market_data", at=200)
                failures: list[BaseException] = []

                def in_background(work: Callable[[], object]) -> threading.Thread:
                    def run() -> None:
                        try:
                            work()
                        except BaseException as exc:  # reported by the test below
                            failures.append(exc)

                    thread = threading.Thread(target=run)
                    thread.start()
                    return thread

                rebuilding = in_background(lambda: rebuild(paused, engine, workers=workers))
                assert paused.halfway.wait(60)
                catch_up(log_a, engine, until=second_of_a)  # A's second run, mid-rebuild
                writing = in_background(lambda: catch_up(log_a, engine, batch_size=40))
                paused.resume.set()
                rebuilding.join(120)
                writing.join(120)
                assert not failures
                assert not rebuilding.is_alive() and not writing.is_alive()
            # The way the candles were kept: copied into a shadow swapped in, or in place.
            assert (_candles_table(engine) == candles) is (kept == "left in place")
            reference_a = _reference(tmp_path / "a" / "log", tmp_path / "reference-a")
            reference_b = _reference(tmp_path / "b" / "log", tmp_path / "reference-b")
            for n, run_id in enumerate(run_ids):
                reference = reference_a if n < 3 else reference_b
                assert _rows_of(engine, run_id) == _rows_of(reference, run_id) > sizes[n], n
                assert projection_digest(engine, run_id) == projection_digest(reference, run_id)
            reference_a.dispose()
            reference_b.dispose()
        finally:
            engine.dispose()


# SQLite waits this long for a write lock before "database is locked" (sqlite3's default).
SQLITE_BUSY_TIMEOUT_S = 5.0


def test_two_rebuilds_of_one_store_take_turns(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second rebuild started while the first is halfway waits until the first is done,
    however long (on SQLite longer than its 5 s wait for a lock), then runs: both succeed,
    with the live digest, and neither deadlocks."""
    run_id = _run_id("turns")
    data = tmp_path / "data"
    _backtest(capsys, data, store_url, btc_slice(tmp_path, 4_000, 2_000), run_id)
    engine = open_store(store_url)
    try:
        live = projection_digest(engine, run_id)
        with EmbeddedLog(data / "log") as log:
            paused = PausingLog(log)
            failures: list[BaseException] = []
            finished: list[str] = []

            def rebuild_from(which: str, source: Any) -> threading.Thread:
                def run() -> None:
                    try:
                        rebuild(source, engine, workers=1)
                        finished.append(which)
                    except BaseException as exc:  # reported by the test below
                        failures.append(exc)

                thread = threading.Thread(target=run)
                thread.start()
                return thread

            first = rebuild_from("first", paused)
            assert paused.halfway.wait(60)
            second = rebuild_from("second", log)
            wait_s = SQLITE_BUSY_TIMEOUT_S + 1 if store_url.startswith("sqlite") else 0.5
            time.sleep(wait_s)  # what the second does meanwhile: wait, not fail
            assert not failures and not finished
            paused.resume.set()
            first.join(60)
            second.join(60)
        assert not failures
        assert finished == ["first", "second"]
        assert projection_digest(engine, run_id) == live
    finally:
        engine.dispose()
