"""The runs the command line starts, each one function: the settings and the parsed
request in, the outcome out. The commands parse and print; this wires a run to its log,
its read models and its snapshots (through ``cdb.bootstrap``, the only place that knows
which log it is) and calls ``streams`` to run it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdb import bootstrap
from cdb.common import UsageError
from cdb.long_running import Stop
from cdb.report_file import write_report
from domain.risk import RiskConfig
from domain.run_config import BacktestConfig
from projections.digest import projection_digest
from projections.projector import catch_up
from projections.queries import RunSummary, run_summary
from projections.report import render_report
from projections.service import CatchUpAfterCommit, Say
from projections.status import run_status, total_lag
from streams.backtest import BacktestOutcome, run_backtest
from streams.csv_source import CandleSource
from streams.live import LiveObserver, LiveOutcome, run_feed, run_paper
from streams.log_port import EventLog
from streams.observability import Health, Metrics
from streams.replay import ReplayError, ReplayOutcome, replay_market_data, replay_signals


@dataclass(frozen=True)
class BacktestResult:
    outcome: BacktestOutcome
    summary: RunSummary
    projection_digest: str


def backtest(
    settings: bootstrap.Settings,
    config: BacktestConfig,
    sources: Sequence[CandleSource],
    *,
    run_id: str | None,
    on_progress: Callable[[int], None] | None,
    report: Path | None,
) -> BacktestResult:
    """Run the backtest, fold it into the read models, and read its summary (and write
    its report to ``report``)."""
    snapshot_every = settings.snapshot_every  # a wrong value is refused before any work
    log = bootstrap.open_log(settings)
    try:
        # The schema first: the candles are folded as they are written (the market-data
        # sink). No connection stays open while the run forks its market-data process.
        engine = bootstrap.open_read_models(settings)
        engine.dispose()
        sink = bootstrap.market_data_sink(settings, log)
        outcome = run_backtest(
            config,
            sources,
            log,
            run_id=run_id,
            on_progress=on_progress,
            parallel=not settings.single_process,
            market_data_sink=sink,
            snapshots=bootstrap.backtest_snapshots(settings),
            snapshot_every=snapshot_every,
        )
        if sink is not None:
            sink.close()
        try:
            catch_up(log, engine, until=outcome.written)
            digest = projection_digest(engine, outcome.run_id, known=outcome.sink_report)
            summary = run_summary(engine, outcome.run_id)
            if report is not None:
                write_report(report, render_report(engine, outcome.run_id))
        finally:
            engine.dispose()
    finally:
        log.close()
    return BacktestResult(outcome, summary, digest)


@dataclass(frozen=True)
class PaperResult:
    outcome: LiveOutcome
    # The run's status in the read models, with its lag; None if they were not followed.
    status: dict[str, Any] | None


def paper(
    settings: bootstrap.Settings,
    config: BacktestConfig,
    sources: Sequence[CandleSource],
    *,
    speed: float | None,
    run_id: str | None,
    project: bool,
    health: Health,
    metrics: Metrics,
    observer: LiveObserver,
    stop: Stop,
    say: Say,
) -> PaperResult:
    """Paper-trade the sources as they stream, on the embedded log, until they end or
    ``stop``; with ``project``, the read models follow every commit."""
    log = bootstrap.paper_log(settings)
    health.set("log", True, str(settings.log_dir))
    engine = None
    try:
        if project:
            engine = bootstrap.open_read_models(settings)
        follow = None if engine is None else CatchUpAfterCommit(log, engine, health, metrics, say)
        with stop.installed():
            outcome = run_paper(
                config,
                sources,
                log,
                speed=speed,
                run_id=run_id,
                snapshots=bootstrap.snapshot_store(settings),
                on_committed=follow,
                observer=observer,
                should_stop=stop,
            )
        health.mark_stopping()
        status = None
        if engine is not None:
            status = run_status(engine, outcome.run_id)
            status["lag"] = total_lag(log, engine)
    finally:
        if engine is not None:
            engine.dispose()
        log.close()
    return PaperResult(outcome, status)


def feed(
    settings: bootstrap.Settings,
    config: BacktestConfig,
    sources: Sequence[CandleSource],
    *,
    speed: float | None,
    run_id: str | None,
    health: Health,
    observer: LiveObserver,
    stop: Stop,
) -> LiveOutcome:
    """Publish the sources' candles to the broker as time passes, for ``cdb worker``."""
    log = bootstrap.feed_log(settings)
    health.set("broker", True, settings.log_location)
    try:
        with stop.installed():
            outcome = run_feed(
                config,
                sources,
                log,
                speed=speed,
                run_id=run_id,
                observer=observer,
                should_stop=stop,
            )
        health.mark_stopping()
    finally:
        log.close()
    return outcome


@dataclass(frozen=True)
class ReplayRequest:
    """A range of ``market_data`` (the engine over those candles) or, with ``risk``, of
    ``signals`` (the Risk Engine and the simulator over them, with those rules)."""

    partition: int
    first: int  # the first offset replayed
    last: int  # the last offset replayed (included)
    risk: RiskConfig | None
    run_id: str | None


def replay(settings: bootstrap.Settings, log: EventLog, request: ReplayRequest) -> ReplayOutcome:
    """Replay the range into a run of its own, fold it into the read models, and return
    how it compares with the original."""
    snapshots = bootstrap.snapshot_store(settings)
    r = request
    try:
        if r.risk is not None:
            outcome = replay_signals(log, snapshots, r.partition, r.first, r.last, r.risk, r.run_id)
        else:
            outcome = replay_market_data(log, snapshots, r.partition, r.first, r.last, r.run_id)
    except ReplayError as exc:
        raise UsageError(str(exc)) from None
    engine = bootstrap.open_read_models(settings)
    try:
        catch_up(log, engine)
    finally:
        engine.dispose()
    return outcome
