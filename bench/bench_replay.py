"""Benchmark: replaying the second half of a one-million-candle run from its snapshot.

Runs the engine once per measurement over a seeded synthetic file of 1-minute candles
(`run_backtest` on the embedded log, snapshots on: the plain backtest speed, read models
not included), then replays the run's `market_data` range from the snapshot nearest its
middle to its end (`replay_market_data`: restore, replay with candle copies and events
written, comparison with the original). Reports candles per second of both, their ratio,
and the time to restore the state from the snapshot; medians of several runs.

    python3 bench/bench_replay.py [--candles 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from synthetic import write_candles

    from domain.run_config import BacktestConfig
    from streams import topics
    from streams.backtest import code_version, run_backtest
    from streams.csv_source import CsvCandleSource
    from streams.embedded_log import EmbeddedLog
    from streams.replay import _metadata, _run_start, _state_before, replay_market_data
    from streams.snapshots import SnapshotStore

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cdb-replay-"))
    csv = write_candles(workdir / "candles.csv", args.candles, seed=7)
    config = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 10, "slow": 30})
    backtests, replays, restores, replayed = [], [], [], 0
    identical = True
    try:
        for i in range(args.runs):
            print(f"  run {i + 1}/{args.runs}: backtest", file=sys.stderr, flush=True)
            data = workdir / f"data-{i}"
            store = SnapshotStore(data / "snapshots")
            with EmbeddedLog(data / "log") as log:
                started = time.perf_counter()
                outcome = run_backtest(
                    config, [CsvCandleSource("SYN_USD", csv)], log, snapshots=store
                )
                backtests.append(time.perf_counter() - started)
                middle = store.nearest(outcome.run_id, args.candles // 2, code_version())
                assert middle is not None, "no snapshot before the middle of the run"
                end = log.end_offset(topics.MARKET_DATA, middle.partition)
                print(f"  run {i + 1}/{args.runs}: replay", file=sys.stderr, flush=True)
                metadata = _metadata(log, outcome.run_id)
                started = time.perf_counter()
                start = _run_start(log, store, metadata, middle.partition)
                state = _state_before(log, store, metadata, middle.partition, start, middle.candles)
                restores.append(time.perf_counter() - started)
                assert state.restored_from == middle.candles and state.refolded == 0
                started = time.perf_counter()
                result = replay_market_data(log, store, middle.partition, middle.offset, end - 1)
                replays.append(time.perf_counter() - started)
                replayed = result.candles
                identical = identical and result.comparison.identical
            shutil.rmtree(data, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    backtest_rate = args.candles / statistics.median(backtests)
    replay_rate = replayed / statistics.median(replays)
    print(f"Command: `python3 bench/bench_replay.py --candles {args.candles} --runs {args.runs}`")
    print()
    print("| measurement | candles | median s | median candles/s | runs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(
        f"| backtest, engine and log (snapshots on) | {args.candles:,} "
        f"| {statistics.median(backtests):.2f} | {backtest_rate:,.0f} | {len(backtests)} |"
    )
    print(
        f"| replay from the middle snapshot to the end | {replayed:,} "
        f"| {statistics.median(replays):.2f} | {replay_rate:,.0f} | {len(replays)} |"
    )
    print(
        f"| restore from that snapshot | - | {statistics.median(restores):.3f} | - "
        f"| {len(restores)} |"
    )
    print()
    ratio = replay_rate / backtest_rate
    print(f"Replay / backtest speed: {ratio:.2f}; every replay identical: {identical}")
    print(
        f"Individual times (s): backtest {[round(t, 2) for t in backtests]}; "
        f"replay {[round(t, 2) for t in replays]}; restore {[round(t, 3) for t in restores]}"
    )


if __name__ == "__main__":
    main()
