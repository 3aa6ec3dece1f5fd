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
import re
import signal
import time
from pathlib import Path
from typing import Any

from tests.support.probes import healthy, metric_samples, metric_total
from tests.support.processes import (
    cdb_output,
    cdb_process,
    cdb_status,
    exits_cleanly_by,
    faust_data_env,
    free_port,
    killed,
    local_store_env,
    mock_backtest_summary,
    wait_for,
)

COUNT = 1500  # candles per symbol
SYMBOLS = "BTC_USDT,ETH_USDT"
MOCK = ["--symbols", SYMBOLS, "--interval", "1m", "--seed", "11", "--count", str(COUNT)]
# 1-minute candles at 30000x: 500 a second per symbol, three seconds for the whole feed.
SPEED = "30000"


def test_a_live_run_on_kafka_killed_and_restarted_equals_a_backtest_of_its_candles(
    tmp_path: Path, fresh_kafka: str
) -> None:
    live, out = tmp_path / "live", tmp_path / "out"
    out.mkdir()
    places = ["--data-dir", str(live), "--log", f"kafka://{fresh_kafka}"]
    project_port, worker_port, feed_port = free_port(), free_port(), free_port()
    project_args = [*places, "project", "--poll", "0.05", "--metrics-port", str(project_port)]
    worker_args = [*places, "worker", "--loglevel", "info", "--metrics-port", str(worker_port)]
    feed_args = [*places, "feed", "mock", *MOCK, "--speed", SPEED]
    feed_args += ["--metrics-port", str(feed_port)]
    project_out, worker_out, feed_out = out / "project.log", out / "worker.log", out / "feed.log"
    worker_env = {**local_store_env(), **faust_data_env(tmp_path / "faust")}

    def projected_candles() -> float:
        return metric_total(project_port, "cdb_events_in_total", topic="market_data")

    with contextlib.ExitStack() as stack:
        projector = stack.enter_context(cdb_process(project_out, *project_args))
        worker = stack.enter_context(cdb_process(worker_out, *worker_args, env=worker_env))
        wait_for(lambda: healthy(project_port), "the projector to be healthy")
        wait_for(lambda: healthy(worker_port), "the worker to be ready")
        feed = stack.enter_context(cdb_process(feed_out, *feed_args))

        # 1. The worker, killed once it consumes candles, is started again.
        wait_for(
            lambda: metric_total(worker_port, "cdb_events_in_total", topic="market_data") > 0,
            "the worker to consume candles",
        )
        killed(worker, worker_out)
        worker = stack.enter_context(cdb_process(worker_out, *worker_args, env=worker_env))

        # 2. The feed, killed a fifth of the way, is started again once the new worker is
        #    ready: the rest of the run reaches the new worker live.
        wait_for(lambda: metric_total(feed_port, "cdb_candles_total") >= 600, "candles published")
        killed(feed, feed_out)
        started = re.search(r"cdb: run (\S+) started", feed_out.read_text(errors="replace"))
        assert started is not None, feed_out.read_text(errors="replace")
        run_id = started[1]
        wait_for(lambda: projected_candles() > 0, "the projector to fold candles")
        projected_before = projected_candles()
        wait_for(lambda: healthy(worker_port), "the restarted worker to be ready")
        feed = stack.enter_context(cdb_process(feed_out, *feed_args))

        # 3. The run goes on: health and metrics while it does.
        wait_for(
            lambda: metric_total(worker_port, "cdb_events_out_total") > 0,
            "the restarted worker to write events",
        )
        assert healthy(worker_port) and healthy(project_port)
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
            final = cdb_status(places, run_id)
            return final.get("status") == "COMPLETED" and final.get("lag") == 0

        wait_for(complete, "the run to be complete in the read models", timeout_s=120)
        # The projector counts a pass when it ends: each candle once, and the end marker.
        wait_for(lambda: projected_candles() >= 2 * COUNT + 1, "the projector's count")
        assert projected_candles() == 2 * COUNT + 1 > projected_before
        lag = ("cdb_consumer_lag", frozenset({"topic": "market_data", "partition": "0"}.items()))
        wait_for(lambda: metric_samples(project_port).get(lag) == 0, "the projector's lag to be 0")
        deadline = time.monotonic() + 15
        projector.send_signal(signal.SIGTERM)
        worker.send_signal(signal.SIGTERM)
        exits_cleanly_by(projector, project_out, deadline)
        exits_cleanly_by(worker, worker_out, deadline)

    assert final["candles"] == 2 * COUNT and final["fills"] > 0, final
    summary = mock_backtest_summary(tmp_path / "backtest", MOCK)
    assert summary["run_id"] == run_id
    digest = cdb_output(*places, "projections", "digest", "--run-id", run_id)
    assert digest.returncode == 0, digest.stderr
    assert digest.stdout.strip() == summary["projection_digest"]
