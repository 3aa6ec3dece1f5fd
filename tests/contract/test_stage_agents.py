"""`cdb agent signal|risk|execution` on a real broker (Tansu): the staged topology writes
the embedded backtest's events, each stage SIGKILLed mid-run and restarted included, and
each agent serves /health and /metrics."""

from __future__ import annotations

import contextlib
import functools
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.run_config import BacktestConfig
from streams import topics
from streams.backtest import prepare_run, run_backtest
from streams.broker_backtest import publish_input
from streams.csv_source import CsvCandleSource
from streams.digest import log_digest
from streams.embedded_log import EmbeddedLog
from streams.kafka_log import KafkaLog
from tests.support.probes import healthy, metric_total
from tests.support.processes import (
    ROOT,
    cdb_process,
    exits_cleanly_by,
    faust_data_env,
    free_port,
    killed,
    local_store_env,
    wait_for,
)

GOLDEN = ROOT / "tests" / "golden"
SOURCES = [
    CsvCandleSource("BTC-USD", GOLDEN / "golden_BTC-USD_30m.csv"),
    CsvCandleSource("ETH-USD", GOLDEN / "golden_ETH-USD_30m.csv"),
]
CONFIG = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 5, "slow": 20})
STAGES = ("signal", "risk", "execution")

_wait_for = functools.partial(wait_for, timeout_s=180, poll_s=0.25)


def _count(kafka: KafkaLog, topic: str, run_id: str, kind: str | None = None) -> int:
    needle = f'"type":"{kind}"'.encode() if kind else b""
    return sum(
        1
        for p in range(kafka.partitions(topic))
        for r in kafka.read(topic, p, verify=False)
        if r.key == run_id and needle in r.value
    )


class Agents:
    """The three stage agents as processes, each on a metrics port of its own."""

    def __init__(self, stack: contextlib.ExitStack, bootstrap: str, workdir: Path) -> None:
        self._stack = stack
        self._bootstrap = bootstrap
        self._workdir = workdir
        self.ports = {stage: free_port() for stage in STAGES}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def out(self, stage: str) -> Path:
        return self._workdir / f"{stage}.log"

    def start(self, stage: str) -> None:
        argv = [
            "--data-dir",
            str(self._workdir / "data"),
            "--log",
            f"kafka://{self._bootstrap}",
            "agent",
            stage,
            "--loglevel",
            "info",
            "--metrics-port",
            str(self.ports[stage]),
        ]
        env = {**local_store_env(), **faust_data_env(self._workdir / "faust")}
        self.processes[stage] = self._stack.enter_context(
            cdb_process(self.out(stage), *argv, env=env)
        )
        _wait_for(lambda: healthy(self.ports[stage]), f"the {stage} agent to be ready")


@contextlib.contextmanager
def _agents(bootstrap: str, workdir: Path) -> Iterator[Agents]:
    with contextlib.ExitStack() as stack:
        agents = Agents(stack, bootstrap, workdir)
        for stage in STAGES:
            agents.start(stage)
        yield agents


def _expected(tmp_path: Path, run_id: str) -> str:
    with EmbeddedLog(tmp_path / "embedded") as embedded:
        return run_backtest(CONFIG, SOURCES, embedded, run_id=run_id).log_digest


def _publish(bootstrap: str, run_id: str) -> None:
    with KafkaLog(bootstrap) as kafka:
        publish_input(prepare_run(CONFIG, SOURCES, kafka, run_id), SOURCES, kafka)


def test_the_staged_agents_write_the_embedded_backtests_events(
    tmp_path: Path, fresh_kafka: str
) -> None:
    run_id = "staged-parity"
    expected = _expected(tmp_path, run_id)
    with _agents(fresh_kafka, tmp_path) as agents, KafkaLog(fresh_kafka) as kafka:
        _publish(fresh_kafka, run_id)
        _wait_for(
            lambda: _count(kafka, topics.RUNS, run_id, "run_completed") == 1,
            "the staged run to complete",
        )
        assert log_digest(kafka, run_id) == expected
        # Each stage counts what it read and wrote, and how long its batches took.
        ports = agents.ports
        assert metric_total(ports["signal"], "cdb_events_out_total", topic="signals") > 0
        assert metric_total(ports["risk"], "cdb_events_out_total", topic="orders") > 0
        assert metric_total(ports["execution"], "cdb_events_out_total", topic="order_results") > 0
        for stage in STAGES:
            assert metric_total(ports[stage], "cdb_processing_latency_seconds_count") > 0
            assert metric_total(ports[stage], "cdb_consumer_lag") >= 0
        for stage, process in agents.processes.items():
            process.send_signal(signal.SIGTERM)
            exits_cleanly_by(process, agents.out(stage), time.monotonic() + 30)


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_killed_mid_run_and_restarted_writes_every_event_exactly_once(
    tmp_path: Path, fresh_kafka: str, stage: str
) -> None:
    run_id = f"staged-kill-{stage}"
    expected = _expected(tmp_path, run_id)
    with _agents(fresh_kafka, tmp_path) as agents, KafkaLog(fresh_kafka) as kafka:
        _publish(fresh_kafka, run_id)
        _wait_for(lambda: _count(kafka, topics.ORDERS, run_id) >= 40, "the run to be under way")
        killed(agents.processes[stage], agents.out(stage))
        assert _count(kafka, topics.RUNS, run_id, "run_completed") == 0
        agents.start(stage)
        _wait_for(
            lambda: _count(kafka, topics.RUNS, run_id, "run_completed") == 1,
            "the run to complete after the restart",
        )
        assert log_digest(kafka, run_id) == expected
