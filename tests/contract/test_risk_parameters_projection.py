"""intensity_changed events fold into the risk_parameters read model, live and rebuilt,
on SQLite and on Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from domain.events import IntensityChanged
from domain.intensity import IntensityConfig, IntensityTracker
from projections import tables
from projections.digest import projection_digest
from projections.projector import catch_up
from projections.rebuild import rebuild
from projections.store import open_store, sqlite_url
from streams import topics
from streams.codec import encode
from streams.embedded_log import EmbeddedLog

RUN_ID = "intensity-projection"


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


def _changes() -> list[IntensityChanged]:
    """The events a tracker's changes give over a good run and then a bad one."""
    tracker = IntensityTracker(IntensityConfig(enabled=True))
    events: list[IntensityChanged] = []
    trades = [(10.0, 2.0)] * 8 + [(-10.0, -2.0)] * 12
    for i, (pnl, return_pct) in enumerate(trades):
        if tracker.on_closed_trade(pnl, return_pct) is not None:
            sequence = len(events)
            events.append(
                tracker.changed_event(
                    event_id=f"{RUN_ID}:intensity_changed:{sequence}",
                    run_id=RUN_ID,
                    sequence=sequence,
                    timestamp=1_700_000_000_000 + i * 60_000,
                    causation_id=f"{RUN_ID}:position_state:{i}",
                )
            )
    return events


def test_intensity_changes_are_projected_into_risk_parameters(
    store: Engine, tmp_path: Path
) -> None:
    events = _changes()
    assert len(events) >= 3
    assert topics.TOPIC_OF_EVENT["intensity_changed"] == topics.PORTFOLIO
    log = EmbeddedLog(tmp_path / "log")
    try:
        log.create_topic(topics.PORTFOLIO)
        log.append(topics.PORTFOLIO, RUN_ID, [(e.timestamp, encode(e)) for e in events])
        log.commit()
        assert catch_up(log, store).events == len(events)
        table = tables.risk_parameters
        with store.connect() as conn:
            rows = conn.execute(
                select(table).where(table.c.run_id == RUN_ID).order_by(table.c.sequence)
            ).all()
        assert [tuple(row) for row in rows] == [
            (
                e.run_id,
                e.sequence,
                e.timestamp,
                e.score,
                e.risk_pct,
                e.max_total_exposure_pct,
                e.max_symbol_exposure_pct,
                e.cooldown_minutes,
                e.trades,
                e.reason,
            )
            for e in events
        ]
        live = projection_digest(store, RUN_ID)
        rebuild(log, store)
        assert projection_digest(store, RUN_ID) == live
        rebuild(log, store, "risk_parameters")
        assert projection_digest(store, RUN_ID) == live
    finally:
        log.close()


def test_risk_parameters_is_a_read_model_in_the_digest(store: Engine) -> None:
    assert tables.risk_parameters in tables.READ_MODELS
    before = projection_digest(store)
    with store.begin() as conn:
        conn.execute(
            tables.risk_parameters.insert(),
            [{"run_id": RUN_ID, "sequence": 0, "score": 0.5, "reason": "START"}],
        )
    assert projection_digest(store) != before
