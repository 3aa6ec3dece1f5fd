"""Live paper trading on a real broker (Tansu): `cdb feed mock`, `cdb worker` and
`cdb project` as processes of their own, the worker and the feed SIGKILLed mid-stream and
started again with the same command.

What is held:

- the restarted feed takes its run up where the log has it, and the restarted worker
  writes every event once: the live run's read models, once ``cdb status`` says COMPLETED
  with lag 0, have the projection digest of a plain backtest over the same generated
  candles, under the same run id, with fills;
- ``cdb status`` says COMPLETED with lag 0 only when the read models hold the whole run:
  every candle, and fills;
- each candle is in the log once: the projector folds exactly the run's candles and its
  end marker from market_data;
- while the run goes on, the worker and the projector serve ``/health`` (200, "ok") and
  ``/metrics``: what the projector reads from market_data grows, the worker writes events;
- SIGTERM stops the projector and the worker with exit code 0 within 15 s.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent.parent
COUNT = 1500  # candles per symbol
SYMBOLS = "BTC_USDT,ETH_USDT"
MOCK = ["--symbols", SYMBOLS, "--interval", "1m", "--seed", "11", "--count", str(COUNT)]
# 1-minute candles at 30000x: 500 a second per symbol, three seconds for the whole feed.
SPEED = "30000"

# The read models go to SQLite in the data directories the test names, whatever the
# environment says.
_ENV = {k: v for k, v in os.environ.items() if k not in {"CDB_STORE_URL", "POSTGRES_HOST"}}
# No proxy from the environment may stand between the test and the loopback servers.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _cdb(out: Path, *argv: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `cdb` subprocess writing to ``out``, killed on the way out if still running."""
    with open(out, "ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cdb", *argv],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=_ENV,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _cdb_output(*argv: str) -> subprocess.CompletedProcess[str]:
    """A `cdb` command run to its end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "cdb", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=_ENV,
    )


def _killed(process: subprocess.Popen[bytes], out: Path) -> None:
    """SIGKILL ``process``, which must still have been running (not ended by itself)."""
    process.send_signal(signal.SIGKILL)
    code = process.wait(timeout=30)
    assert code == -signal.SIGKILL, (code, out.read_text(errors="replace")[-2000:])


def _exits_cleanly_by(process: subprocess.Popen[bytes], out: Path, deadline: float) -> None:
    """``process`` exits with code 0 before ``deadline`` (``time.monotonic()``)."""
    try:
        code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        code = None
    assert code == 0, (code, out.read_text(errors="replace")[-2000:])


def _get(url: str) -> tuple[int, bytes]:
    """(status, body) of ``GET url``; error statuses are answers too, no answer is 0."""
    try:
        with _OPENER.open(url, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), bytes(error.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, b""


def _health(port: int) -> tuple[int, dict[str, Any]]:
    status, body = _get(f"http://127.0.0.1:{port}/health")
    return status, (orjson.loads(body) if status else {})


def _healthy(port: int) -> bool:
    status, health = _health(port)
    return status == 200 and health["status"] == "ok" and health["ready"] is True


def _samples(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the process's /metrics, by name and labels ({} if it does not answer)."""
    status, body = _get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return {}
    return {
        (sample.name, frozenset(sample.labels.items())): float(sample.value)
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _total(port: int, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none yet)."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample, sample_labels), value in _samples(port).items()
        if sample == name and wanted <= sample_labels
    )


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _status(places: list[str], run_id: str) -> dict[str, Any]:
    """`cdb status --json` of the run ({} while the read models do not have it)."""
    done = _cdb_output(*places, "status", "--run-id", run_id, "--json")
    if done.returncode != 0:
        return {}
    return orjson.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_live_run_on_kafka_killed_and_restarted_equals_a_backtest_of_its_candles(
    tmp_path: Path, fresh_kafka: str
) -> None:
    live, out = tmp_path / "live", tmp_path / "out"
    out.mkdir()
    places = ["--data-dir", str(live), "--log", f"kafka://{fresh_kafka}"]
    project_port, worker_port, feed_port = _free_port(), _free_port(), _free_port()
    project_args = [*places, "project", "--poll", "0.05", "--metrics-port", str(project_port)]
    worker_args = [*places, "worker", "--loglevel", "info", "--metrics-port", str(worker_port)]
    feed_args = [*places, "feed", "mock", *MOCK, "--speed", SPEED]
    feed_args += ["--metrics-port", str(feed_port)]
    project_out, worker_out, feed_out = out / "project.log", out / "worker.log", out / "feed.log"

    def projected_candles() -> float:
        return _total(project_port, "cdb_events_in_total", topic="market_data")

    with contextlib.ExitStack() as stack:
        projector = stack.enter_context(_cdb(project_out, *project_args))
        worker = stack.enter_context(_cdb(worker_out, *worker_args))
        _wait_for(lambda: _healthy(project_port), "the projector to be healthy")
        _wait_for(lambda: _healthy(worker_port), "the worker to be ready")
        feed = stack.enter_context(_cdb(feed_out, *feed_args))

        # 1. The worker, killed once it consumes candles, is started again.
        _wait_for(
            lambda: _total(worker_port, "cdb_events_in_total", topic="market_data") > 0,
            "the worker to consume candles",
        )
        _killed(worker, worker_out)
        worker = stack.enter_context(_cdb(worker_out, *worker_args))

        # 2. The feed, killed a fifth of the way, is started again once the new worker is
        #    ready: the rest of the run reaches the new worker live.
        _wait_for(lambda: _total(feed_port, "cdb_candles_total") >= 600, "candles published")
        _killed(feed, feed_out)
        started = re.search(r"cdb: run (\S+) started", feed_out.read_text(errors="replace"))
        assert started is not None, feed_out.read_text(errors="replace")
        run_id = started[1]
        _wait_for(lambda: projected_candles() > 0, "the projector to fold candles")
        projected_before = projected_candles()
        _wait_for(lambda: _healthy(worker_port), "the restarted worker to be ready")
        feed = stack.enter_context(_cdb(feed_out, *feed_args))

        # 3. The run goes on: health and metrics while it does.
        _wait_for(
            lambda: _total(worker_port, "cdb_events_out_total") > 0,
            "the restarted worker to write events",
        )
        assert _healthy(worker_port) and _healthy(project_port)
        assert feed.wait(timeout=60) == 0, feed_out.read_text(errors="replace")[-2000:]
        feed_log = feed_out.read_text(errors="replace")
        taken_up = re.search(rf"cdb: run {run_id} taken up at candle ([\d,]+)", feed_log)
        assert taken_up is not None, feed_log
        assert 600 <= int(taken_up[1].replace(",", "")) < 2 * COUNT
        assert f"run {run_id}: {2 * COUNT:,} candles in the log, published to its end" in feed_log

        # 4. Complete and projected; then SIGTERM stops the services cleanly.
        final: dict[str, Any] = {}

        def complete() -> bool:
            nonlocal final
            final = _status(places, run_id)
            return final.get("status") == "COMPLETED" and final.get("lag") == 0

        _wait_for(complete, "the run to be complete in the read models", timeout_s=120)
        # The projector counts a pass when it ends: each candle once, and the end marker.
        _wait_for(lambda: projected_candles() >= 2 * COUNT + 1, "the projector's count")
        assert projected_candles() == 2 * COUNT + 1 > projected_before
        lag = ("cdb_consumer_lag", frozenset({"topic": "market_data", "partition": "0"}.items()))
        _wait_for(lambda: _samples(project_port).get(lag) == 0, "the projector's lag to be 0")
        deadline = time.monotonic() + 15
        projector.send_signal(signal.SIGTERM)
        worker.send_signal(signal.SIGTERM)
        _exits_cleanly_by(projector, project_out, deadline)
        _exits_cleanly_by(worker, worker_out, deadline)

    assert final["candles"] == 2 * COUNT and final["fills"] > 0, final
    backtest = _cdb_output(
        "--data-dir",
        str(tmp_path / "backtest"),
        "--log",
        "embedded",
        "backtest",
        "--feed",
        "mock",
        *MOCK,
        "--json",
        "--no-progress",
    )
    assert backtest.returncode == 0, backtest.stderr
    summary = orjson.loads(backtest.stdout)
    assert summary["run_id"] == run_id
    digest = _cdb_output(*places, "projections", "digest", "--run-id", run_id)
    assert digest.returncode == 0, digest.stderr
    assert digest.stdout.strip() == summary["projection_digest"]
