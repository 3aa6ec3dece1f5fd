"""Health and metrics over real HTTP: a real server on an ephemeral port, asked by urllib."""

from __future__ import annotations

import errno
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from domain.events import (
    Alert,
    Candle,
    DeadLetter,
    Event,
    MarketDataEvent,
    PortfolioSnapshot,
    RiskDecision,
    SimulatedTrade,
)
from streams.codec import decode_view, encode
from streams.observability import (
    CANDLE_TO_PROJECTED_ORDER_RESULT,
    Health,
    Metrics,
    ObservabilityServer,
    PortInUse,
)

RUN_ID = "obs-run"
CANDLE_MS = 1_700_000_060_000

# No proxy from the environment may stand between the test and the loopback server.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

FAMILIES = {
    "cdb_events_in",
    "cdb_events_out",
    "cdb_consumer_lag",
    "cdb_processing_latency_seconds",
    "cdb_risk_decisions",
    "cdb_alerts",
    "cdb_equity",
    "cdb_drawdown_pct",
    "cdb_dead_letters",
    "cdb_candles",
    "cdb_last_candle_timestamp_seconds",
}


def get(server: ObservabilityServer, path: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of ``GET path``; error statuses are answers too."""
    try:
        with _OPENER.open(server.url + path, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


def get_json(server: ObservabilityServer, path: str) -> tuple[int, Any]:
    status, content_type, body = get(server, path)
    assert content_type == "application/json"
    return status, json.loads(body)


def samples(server: ObservabilityServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``, by name and labels."""
    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


def _envelope(event_type: str, sequence: int = 0, timestamp: int = CANDLE_MS) -> dict[str, Any]:
    return {
        "event_id": f"{RUN_ID}:{event_type}:{sequence}",
        "run_id": RUN_ID,
        "sequence": sequence,
        "timestamp": timestamp,
    }


def events() -> list[Event]:
    """One of each event the metrics read, with known values."""
    return [
        MarketDataEvent(
            **_envelope("market_data"),
            symbol="BTC_USD",
            open=100.0,
            high=110.0,
            low=90.0,
            close=105.0,
            volume=3.0,
            interval="1m",
        ),
        RiskDecision(
            **_envelope("risk_decision", 0),
            symbol="BTC_USD",
            requested_direction="BUY",
            approved=True,
            approved_size=0.5,
            reason_code="APPROVED",
        ),
        RiskDecision(
            **_envelope("risk_decision", 1),
            symbol="BTC_USD",
            requested_direction="BUY",
            approved=False,
            approved_size=0.0,
            reason_code="MAX_EXPOSURE_REACHED",
        ),
        Alert(
            **_envelope("alert"),
            level="WARNING",
            code="EXPOSURE_HIGH",
            message="exposure close to its limit",
        ),
        PortfolioSnapshot(
            **_envelope("portfolio_snapshot"),
            cash=5_000.0,
            equity=10_500.0,
            high_water_mark=10_769.23,
            drawdown_pct=2.5,
            exposure=5_500.0,
            exposure_pct=52.38,
            realized_pnl=500.0,
            open_positions=1,
        ),
        DeadLetter(
            **_envelope("dead_letter"), source="btc.csv", line=7, raw="a,b", reason="bad row"
        ),
        SimulatedTrade(
            **_envelope("order_result"),
            order_id="SIM_obs_000001",
            status="FILLED",
            symbol="BTC_USD",
            side="BUY",
            filled_quantity=0.5,
            price=105.0,
            fee=0.05,
        ),
    ]


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def served(metrics: Metrics) -> Iterator[ObservabilityServer]:
    with ObservabilityServer(0, Health(), metrics.registry) as server:
        yield server


# -- /metrics -----------------------------------------------------------------------------------


def test_metrics_serves_every_family_before_anything_happened(
    served: ObservabilityServer,
) -> None:
    status, content_type, body = get(served, "/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert names >= FAMILIES
    assert "cdb_dead_letters_total 0.0" in body.decode()


def test_counters_and_gauges_follow_the_events_written(
    metrics: Metrics, served: ObservabilityServer
) -> None:
    metrics.events_in("market_data", 3)
    metrics.events_in("market_data")
    metrics.events_out(events())
    metrics.lag("market_data", 2, 17)
    metrics.latency(CANDLE_TO_PROJECTED_ORDER_RESULT, 0.003)

    found = samples(served)
    assert value(found, "cdb_events_in_total", topic="market_data") == 4
    assert value(found, "cdb_events_out_total", topic="market_data") == 1
    assert value(found, "cdb_events_out_total", topic="risk_decisions") == 2
    assert value(found, "cdb_events_out_total", topic="alerts") == 1
    assert value(found, "cdb_events_out_total", topic="portfolio") == 1
    assert value(found, "cdb_events_out_total", topic="dead_letters") == 1
    assert value(found, "cdb_events_out_total", topic="order_results") == 1
    assert ("cdb_events_out_total", frozenset({("topic", "signals")})) not in found
    assert value(found, "cdb_risk_decisions_total", decision="approved", reason="APPROVED") == 1
    assert (
        value(
            found,
            "cdb_risk_decisions_total",
            decision="rejected",
            reason="MAX_EXPOSURE_REACHED",
        )
        == 1
    )
    assert value(found, "cdb_alerts_total", level="WARNING") == 1
    assert ("cdb_alerts_total", frozenset({("level", "CRITICAL")})) not in found
    assert value(found, "cdb_equity", run_id=RUN_ID) == 10_500.0
    assert value(found, "cdb_drawdown_pct", run_id=RUN_ID) == 2.5
    assert value(found, "cdb_dead_letters_total") == 1
    assert value(found, "cdb_candles_total", run_id=RUN_ID) == 1
    assert value(found, "cdb_last_candle_timestamp_seconds", run_id=RUN_ID) == CANDLE_MS / 1000
    assert value(found, "cdb_consumer_lag", topic="market_data", partition="2") == 17
    stage = CANDLE_TO_PROJECTED_ORDER_RESULT
    assert value(found, "cdb_processing_latency_seconds_count", stage=stage) == 1
    assert value(found, "cdb_processing_latency_seconds_sum", stage=stage) == 0.003
    assert value(found, "cdb_processing_latency_seconds_bucket", stage=stage, le="0.0025") == 0
    assert value(found, "cdb_processing_latency_seconds_bucket", stage=stage, le="0.005") == 1

    # Counters add up; gauges take the latest snapshot; the last candle time never goes back.
    older = MarketDataEvent(
        **_envelope("market_data", 1, timestamp=CANDLE_MS - 60_000),
        symbol="ETH_USD",
        open=1.0,
        high=1.0,
        low=1.0,
        close=1.0,
        volume=1.0,
        interval="1m",
    )
    newer = events()[0].model_copy(update={"sequence": 2, "timestamp": CANDLE_MS + 60_000})
    later = events()[4].model_copy(update={"equity": 9_000.0, "drawdown_pct": 16.5})
    metrics.events_out([newer, *events(), later])  # the newest candle first in its batch
    metrics.events_out([older])  # a batch of its own: its time is behind the one served
    metrics.lag("market_data", 2, 0)
    found = samples(served)
    assert value(found, "cdb_events_out_total", topic="market_data") == 4
    assert value(found, "cdb_events_out_total", topic="risk_decisions") == 4
    assert value(found, "cdb_events_out_total", topic="portfolio") == 3
    assert value(found, "cdb_risk_decisions_total", decision="approved", reason="APPROVED") == 2
    assert value(found, "cdb_alerts_total", level="WARNING") == 2
    assert value(found, "cdb_dead_letters_total") == 2
    assert value(found, "cdb_candles_total", run_id=RUN_ID) == 4
    assert value(found, "cdb_equity", run_id=RUN_ID) == 9_000.0
    assert value(found, "cdb_drawdown_pct", run_id=RUN_ID) == 16.5
    assert (
        value(found, "cdb_last_candle_timestamp_seconds", run_id=RUN_ID)
        == (CANDLE_MS + 60_000) / 1000
    )
    assert value(found, "cdb_consumer_lag", topic="market_data", partition="2") == 0


def test_a_run_without_snapshots_serves_no_equity(
    metrics: Metrics, served: ObservabilityServer
) -> None:
    metrics.events_out(events()[:1])  # a feed: candles only
    found = samples(served)
    assert value(found, "cdb_candles_total", run_id=RUN_ID) == 1
    assert ("cdb_equity", frozenset({("run_id", RUN_ID)})) not in found
    assert ("cdb_drawdown_pct", frozenset({("run_id", RUN_ID)})) not in found


def test_candles_published_outside_events_count_as_candles(
    metrics: Metrics, served: ObservabilityServer
) -> None:
    candles = [
        Candle("BTC_USD", CANDLE_MS + i * 60_000, 1.0, 1.0, 1.0, 1.0, 1.0, "1m", 60_000)
        for i in range(3)
    ]
    metrics.candles_published(RUN_ID, candles)
    metrics.candles_published(RUN_ID, candles[:1])  # older: the last candle time stays
    metrics.candles_published(RUN_ID, [])
    found = samples(served)
    assert value(found, "cdb_candles_total", run_id=RUN_ID) == 4
    assert (
        value(found, "cdb_last_candle_timestamp_seconds", run_id=RUN_ID)
        == (CANDLE_MS + 120_000) / 1000
    )
    assert ("cdb_events_out_total", frozenset({("topic", "market_data")})) not in found


def test_views_count_as_their_models_do(served: ObservabilityServer) -> None:
    wire = [encode(event) for event in events()]
    views = [decode_view(value) for value in wire]
    assert not any(isinstance(view, Event) for view in views)
    by_views = Metrics()
    by_views.events_out(views)
    by_models = Metrics()
    by_models.events_out(events())

    with (
        ObservabilityServer(0, Health(), by_views.registry) as of_views,
        ObservabilityServer(0, Health(), by_models.registry) as of_models,
    ):
        from_views, from_models = samples(of_views), samples(of_models)
    created = {key for key in from_models if key[0].endswith("_created")}
    assert {k: v for k, v in from_views.items() if k not in created} == {
        k: v for k, v in from_models.items() if k not in created
    }
    assert value(from_views, "cdb_equity", run_id=RUN_ID) == 10_500.0
    assert (
        value(
            from_views,
            "cdb_risk_decisions_total",
            decision="rejected",
            reason="MAX_EXPOSURE_REACHED",
        )
        == 1
    )


def test_two_servers_with_their_own_registries_share_nothing() -> None:
    first, second = Metrics(), Metrics()
    with (
        ObservabilityServer(0, Health(), first.registry) as one,
        ObservabilityServer(0, Health(), second.registry) as two,
    ):
        assert one.port != two.port
        first.events_in("market_data", 5)
        second.events_in("market_data", 2)
        second.events_out(events()[4:5])
        one_found, two_found = samples(one), samples(two)
    assert value(one_found, "cdb_events_in_total", topic="market_data") == 5
    assert value(two_found, "cdb_events_in_total", topic="market_data") == 2
    assert ("cdb_equity", frozenset({("run_id", RUN_ID)})) not in one_found
    assert ("cdb_candles_total", frozenset({("run_id", RUN_ID)})) not in two_found
    assert value(two_found, "cdb_equity", run_id=RUN_ID) == 10_500.0


# -- /health ------------------------------------------------------------------------------------


def test_health_follows_the_dependencies() -> None:
    health = Health()
    health.require("kafka")
    health.require("postgres")
    with ObservabilityServer(0, health, CollectorRegistry()) as server:
        status, body = get_json(server, "/health")
        assert status == 503
        assert body["status"] == "starting"
        assert body["ready"] is False
        assert body["live"] is True
        assert body["dependencies"]["kafka"] == {"ok": False, "detail": "not checked yet"}
        assert body["dependencies"]["postgres"] == {"ok": False, "detail": "not checked yet"}

        health.set("kafka", True, "127.0.0.1:9092")
        status, body = get_json(server, "/health")
        assert (status, body["status"]) == (503, "starting")
        missing = [name for name, dep in body["dependencies"].items() if not dep["ok"]]
        assert missing == ["postgres"]

        health.set("postgres", True)
        status, body = get_json(server, "/health")
        assert (status, body["status"], body["ready"]) == (200, "ok", True)
        assert body["dependencies"]["kafka"] == {"ok": True, "detail": "127.0.0.1:9092"}
        assert get_json(server, "/health/ready") == (200, body)

        health.set("postgres", False, "connection refused")
        status, body = get_json(server, "/health")
        assert (status, body["status"], body["ready"]) == (503, "degraded", False)
        assert body["dependencies"]["postgres"] == {"ok": False, "detail": "connection refused"}
        assert get_json(server, "/health/ready")[0] == 503

        health.set("postgres", True)
        assert get_json(server, "/health")[0] == 200
        health.mark_stopping()
        status, body = get_json(server, "/health")
        assert (status, body["status"], body["ready"]) == (503, "stopping", False)
        assert get_json(server, "/health/ready")[0] == 503
        # Draining is not dying: the process is still alive.
        assert get_json(server, "/health/live") == (200, {"live": True})


def test_a_process_without_dependencies_is_ready() -> None:
    with ObservabilityServer(0, Health(), CollectorRegistry()) as server:
        status, body = get_json(server, "/health")
    assert (status, body["status"], body["dependencies"]) == (200, "ok", {})


def test_live_answers_and_unknown_paths_are_404() -> None:
    health = Health()
    health.require("kafka")  # not ready: liveness does not care
    with ObservabilityServer(0, health, CollectorRegistry()) as server:
        assert get_json(server, "/health/live") == (200, {"live": True})
        assert get(server, "/nope")[0] == 404
        assert get(server, "/metricsx")[0] == 404
        assert get(server, "/health/other")[0] == 404


# -- binding and stopping -----------------------------------------------------------------------


def test_a_port_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse) as raised:
            ObservabilityServer(port, Health(), CollectorRegistry()).start()
    assert isinstance(raised.value, OSError)
    assert raised.value.errno == errno.EADDRINUSE
    assert raised.value.port == port
    assert str(port) in str(raised.value)
    assert "already in use" in str(raised.value)


def test_a_second_server_on_the_same_port_is_refused() -> None:
    with ObservabilityServer(0, Health(), CollectorRegistry()) as first:
        with pytest.raises(PortInUse, match=str(first.port)):
            ObservabilityServer(first.port, Health(), CollectorRegistry()).start()
        assert get(first, "/health/live")[0] == 200  # the first one still serves


def test_stop_is_quick_and_frees_the_port() -> None:
    server = ObservabilityServer(0, Health(), CollectorRegistry()).start()
    port = server.port
    assert port != 0
    assert get(server, "/metrics")[0] == 200  # a served connection, left in TIME_WAIT
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    with pytest.raises(urllib.error.URLError):
        get(server, "/health/live")
    server.stop()  # stopping twice is harmless

    with ObservabilityServer(port, Health(), CollectorRegistry()) as again:
        assert again.port == port
        assert get(again, "/health/live")[0] == 200
