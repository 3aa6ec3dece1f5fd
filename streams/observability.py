"""Health and Prometheus metrics of the long-running processes, over plain HTTP.

The live feed, the engine worker, the projector and the all-in-one ``cdb paper`` process
each serve, from a daemon thread beside their work:

- ``GET /metrics``: the Prometheus text exposition of the process's own registry;
- ``GET /health`` and ``GET /health/ready``: a JSON snapshot of the dependencies the
  process declared (Kafka, Postgres, ...), HTTP 200 when every one is ok, 503 otherwise;
- ``GET /health/live``: HTTP 200 as long as the process runs, whatever its dependencies.

What it guarantees, and why:

- A process is ready only when every dependency it declared has been checked and is ok.
  A dependency starts "not checked yet", so a process that has not yet reached its broker
  or store says "starting", never "ok": an orchestrator sends it no traffic until then.
  One that was checked and is bad makes the process "degraded"; a draining process says
  "stopping" and is not ready, so it is taken out of rotation before it exits.
- Metrics live in a registry passed in (a new one by default), never in the global one:
  several processes, or several tests, in one interpreter never add to each other's values.
- ``Metrics.events_out`` reads the events themselves (their ``type`` and payload fields),
  in one pass with string comparisons only: it runs for every event of a live stream, and
  works the same on pydantic models and on the msgspec views of ``streams.event_views``.
- Serving never disturbs the process: requests are not logged, a client that hangs up is
  not a traceback on stderr, ``stop()`` returns within a fraction of a second and frees the
  port, and a port already taken is a ``PortInUse`` error naming it, at start.

This module observes; it decides nothing. Nothing in the domain depends on it.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, TypedDict, cast
from urllib.parse import urlsplit

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from domain.events import Event
from domain.events.market import Bar
from streams import topics

# The seed's ports, one per service:
# - MARKET_DATA_PORT: the feed (market data ingestion); the all-in-one ``cdb paper``
#   serves on it too, being the feed and everything after it in one process.
# - SIGNAL_PORT, RISK_PORT, EXECUTION_PORT: the stage agents (``cdb agent signal|risk|
#   execution``); the fused worker, every stage in one process, serves on SIGNAL_PORT.
# - PROJECTOR_PORT: the projector (the read models follow the log).
# - INTENSITY_PORT: ``cdb intensity``, the risk service's loop into the Redis risk cache.
MARKET_DATA_PORT = 8000
SIGNAL_PORT = 8001
RISK_PORT = 8002
EXECUTION_PORT = 8003
PROJECTOR_PORT = 8004
INTENSITY_PORT = 8005

DEFAULT_HOST = "127.0.0.1"

# The stage measured end to end: a candle in, its order results in the read models.
CANDLE_TO_PROJECTED_ORDER_RESULT = "candle_to_projected_order_result"

# Latency buckets from half a millisecond to five seconds (seconds).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

# The topic label of an event whose type no topic is known for.
UNKNOWN_TOPIC = "unknown"

NOT_CHECKED = "not checked yet"

Status = Literal["ok", "degraded", "starting", "stopping"]

log = logging.getLogger("cdb.observability")


# -- health -------------------------------------------------------------------------------------


class DependencyHealth(TypedDict):
    ok: bool
    detail: str


class HealthSnapshot(TypedDict):
    status: Status
    live: bool
    ready: bool
    dependencies: dict[str, DependencyHealth]


class Health:
    """The named dependencies of one process and whether each is ok; safe across threads.

    ``status`` is "stopping" once ``mark_stopping`` was called, else "degraded" if a
    dependency was checked and is not ok, else "starting" if one is not checked yet, else
    "ok". The process is ready only when the status is "ok".
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> (checked, ok, detail)
        self._dependencies: dict[str, tuple[bool, bool, str]] = {}
        self._stopping = False

    def require(self, name: str) -> None:
        """Declare a dependency, not ready until ``set`` says it is ok. Declaring one again
        keeps what is known of it."""
        with self._lock:
            self._dependencies.setdefault(name, (False, False, NOT_CHECKED))

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        """Record the outcome of a check of ``name`` (declaring it if it was not)."""
        with self._lock:
            self._dependencies[name] = (True, ok, detail)

    def mark_stopping(self) -> None:
        """The process is draining: from now on it reports "stopping" and is not ready."""
        with self._lock:
            self._stopping = True

    def snapshot(self) -> HealthSnapshot:
        with self._lock:
            dependencies = dict(self._dependencies)
            stopping = self._stopping
        status: Status
        if stopping:
            status = "stopping"
        elif any(checked and not ok for checked, ok, _ in dependencies.values()):
            status = "degraded"
        elif any(not checked for checked, _, _ in dependencies.values()):
            status = "starting"
        else:
            status = "ok"
        return {
            "status": status,
            "live": True,
            "ready": status == "ok",
            "dependencies": {
                name: {"ok": ok, "detail": detail}
                for name, (_, ok, detail) in sorted(dependencies.items())
            },
        }


# -- metrics ------------------------------------------------------------------------------------


class _Tally:
    """What one call of ``Metrics.events_out`` counted, before it touches a metric."""

    __slots__ = (
        "alerts",
        "by_topic",
        "candles",
        "dead_letters",
        "decisions",
        "latest_ms",
        "portfolio",
    )

    def __init__(self) -> None:
        self.by_topic: dict[str, int] = {}
        self.candles: dict[str, int] = {}
        self.latest_ms: dict[str, int] = {}
        self.decisions: dict[tuple[str, str], int] = {}
        self.alerts: dict[str, int] = {}
        self.portfolio: dict[str, tuple[float, float]] = {}
        self.dead_letters = 0

    def add(self, event: Any) -> None:
        kind = event.type
        topic = topics.TOPIC_OF_EVENT.get(kind, UNKNOWN_TOPIC)
        self.by_topic[topic] = self.by_topic.get(topic, 0) + 1
        if kind == "market_data":
            run_id, timestamp = event.run_id, event.timestamp
            self.candles[run_id] = self.candles.get(run_id, 0) + 1
            if timestamp > self.latest_ms.get(run_id, timestamp - 1):
                self.latest_ms[run_id] = timestamp
        elif kind == "portfolio_snapshot":
            self.portfolio[event.run_id] = (event.equity, event.drawdown_pct)
        elif kind == "risk_decision":
            key = ("approved" if event.approved else "rejected", event.reason_code)
            self.decisions[key] = self.decisions.get(key, 0) + 1
        elif kind == "alert":
            self.alerts[event.level] = self.alerts.get(event.level, 0) + 1
        elif kind == "dead_letter":
            self.dead_letters += 1


class Metrics:
    """The ``cdb_`` metric families of one process, in ``registry`` (a new one by default).

    ``registry`` is the one to serve (``ObservabilityServer``). Label values: ``topic`` is
    a topic name, ``decision`` "approved" or "rejected", ``reason`` a risk reason code,
    ``level`` an alert level, ``stage`` a processing stage.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        r = self.registry
        self._events_in = Counter(
            "cdb_events_in_total", "Events read, by topic.", ["topic"], registry=r
        )
        self._events_out = Counter(
            "cdb_events_out_total", "Events written, by topic.", ["topic"], registry=r
        )
        self._lag = Gauge(
            "cdb_consumer_lag",
            "Records behind the end of a topic partition.",
            ["topic", "partition"],
            registry=r,
        )
        self._latency = Histogram(
            "cdb_processing_latency_seconds",
            "Processing latency by stage, in seconds.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._risk_decisions = Counter(
            "cdb_risk_decisions_total",
            "Risk decisions, by decision (approved or rejected) and reason code.",
            ["decision", "reason"],
            registry=r,
        )
        self._alerts = Counter(
            "cdb_alerts_total", "Alerts raised, by level.", ["level"], registry=r
        )
        self._equity = Gauge(
            "cdb_equity", "Equity of the latest portfolio snapshot, by run.", ["run_id"], registry=r
        )
        self._drawdown = Gauge(
            "cdb_drawdown_pct",
            "Drawdown (percent) of the latest portfolio snapshot, by run.",
            ["run_id"],
            registry=r,
        )
        self._dead_letters = Counter(
            "cdb_dead_letters_total", "Inputs that could not be used.", registry=r
        )
        self._errors = Counter(
            "cdb_errors_total",
            "Failures that stopped a stage's work, by stage.",
            ["stage"],
            registry=r,
        )
        self._held = Gauge(
            "cdb_stage_held_records",
            "Input records a stage agent holds while it waits for others (RE: candles "
            "waiting for SE's signals or XS's fills), by stage.",
            ["stage"],
            registry=r,
        )
        self._candles = Counter(
            "cdb_candles_total",
            "Candles (market_data events) written, by run.",
            ["run_id"],
            registry=r,
        )
        self._last_candle = Gauge(
            "cdb_last_candle_timestamp_seconds",
            "Open time (Unix seconds) of the latest candle written, by run.",
            ["run_id"],
            registry=r,
        )
        # Labelled children, looked up once each: ``labels()`` takes a lock and builds a key,
        # several times the cost of the rest of ``events_out`` for a single event.
        self._out_by_topic: dict[str, Counter] = {}
        self._in_by_topic: dict[str, Counter] = {}
        self._of_run: dict[tuple[int, str], Any] = {}
        self._decision_children: dict[tuple[str, str], Counter] = {}
        self._alert_children: dict[str, Counter] = {}
        self._lock = threading.Lock()
        self._last_candle_ms: dict[str, int] = {}

    def events_in(self, topic: str, n: int = 1) -> None:
        """``n`` events read from ``topic``."""
        child = self._in_by_topic.get(topic)
        if child is None:
            child = self._in_by_topic.setdefault(topic, self._events_in.labels(topic=topic))
        child.inc(n)

    def events_out(self, events: Iterable[Event]) -> None:
        """Count ``events`` (models or views) by topic, and update the families their
        payloads feed: risk decisions, alerts, equity and drawdown (portfolio snapshots),
        dead letters, candles and the latest candle's time (market_data events)."""
        tally = _Tally()
        add = tally.add
        for event in cast(Iterable[Any], events):
            add(event)
        for topic, n in tally.by_topic.items():
            child = self._out_by_topic.get(topic)
            if child is None:
                child = self._out_by_topic.setdefault(topic, self._events_out.labels(topic=topic))
            child.inc(n)
        for run_id, n in tally.candles.items():
            self._count_candles(run_id, n, tally.latest_ms[run_id])
        for run_id, (equity, drawdown) in tally.portfolio.items():
            self._run(self._equity, run_id).set(equity)
            self._run(self._drawdown, run_id).set(drawdown)
        self._count_decisions_and_alerts(tally)
        if tally.dead_letters:
            self._dead_letters.inc(tally.dead_letters)

    def _count_decisions_and_alerts(self, tally: _Tally) -> None:
        for key, n in tally.decisions.items():
            counter = self._decision_children.get(key)
            if counter is None:
                decision, reason = key
                counter = self._decision_children.setdefault(
                    key, self._risk_decisions.labels(decision=decision, reason=reason)
                )
            counter.inc(n)
        for level, n in tally.alerts.items():
            counter = self._alert_children.get(level)
            if counter is None:
                counter = self._alert_children.setdefault(level, self._alerts.labels(level=level))
            counter.inc(n)

    def candles_published(self, run_id: str, candles: Sequence[Bar]) -> None:
        """``candles`` of ``run_id`` processed without passing through ``events_out`` as
        market_data events (a process that folds candles it reads or generates itself):
        counted and timed as those events are. Never both for the same candles."""
        if candles:
            self._count_candles(run_id, len(candles), max(c.timestamp for c in candles))

    def _count_candles(self, run_id: str, n: int, latest_ms: int) -> None:
        """``n`` candles of ``run_id``, the latest opening at ``latest_ms``: the last candle
        time is the latest ever seen, so a batch of older candles never moves it back."""
        self._run(self._candles, run_id).inc(n)
        with self._lock:
            if latest_ms > self._last_candle_ms.get(run_id, latest_ms - 1):
                self._last_candle_ms[run_id] = latest_ms
                self._run(self._last_candle, run_id).set(latest_ms / 1000)

    def _run(self, family: Counter | Gauge, run_id: str) -> Any:
        """``family``'s child of ``run_id``; a run's gauges exist only once it has a value,
        so a process that writes no portfolio snapshots serves no equity of 0."""
        key = (id(family), run_id)
        child = self._of_run.get(key)
        if child is None:
            child = self._of_run.setdefault(key, family.labels(run_id=run_id))
        return child

    def records_out(self, topic: str, n: int) -> None:
        """``n`` records other than events (a staged agent's hand-off) written to ``topic``."""
        if n:
            self._events_out.labels(topic=topic).inc(n)

    def error(self, stage: str) -> None:
        self._errors.labels(stage=stage).inc()

    def lag(self, topic: str, partition: int, behind: int) -> None:
        """``behind`` records between a consumer's position and the end of a partition."""
        self._lag.labels(topic=topic, partition=str(partition)).set(behind)

    def held(self, stage: str, records: int) -> None:
        """``records`` input records ``stage`` holds, waiting for others."""
        self._held.labels(stage=stage).set(records)

    def latency(self, stage: str, seconds: float) -> None:
        """One observation of ``stage``'s latency (e.g. ``CANDLE_TO_PROJECTED_ORDER_RESULT``)."""
        self._latency.labels(stage=stage).observe(seconds)


# -- the HTTP server ----------------------------------------------------------------------------


class PortInUse(OSError):
    """The port to serve health and metrics on is taken (by another process, or another
    server of this one)."""

    def __init__(self, port: int, host: str = DEFAULT_HOST) -> None:
        super().__init__(
            errno.EADDRINUSE,
            f"cannot serve health and metrics on {host}:{port}: port {port} is already in "
            "use (stop the process listening there, or choose another port)",
        )
        self.port = port
        self.host = host

    def __reduce__(self) -> tuple[type[PortInUse], tuple[int, str]]:
        return PortInUse, (self.port, self.host)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Rebinding a port a stopped server left in TIME_WAIT is fine; sharing a live one is not.
    allow_reuse_address = True
    allow_reuse_port = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up mid-response is no news for the process's stderr.
        log.debug("observability request from %s failed", client_address, exc_info=True)


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _handler(health: Health, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "cdb-observability"

        def do_GET(self) -> None:
            path = urlsplit(self.path).path.rstrip("/") or "/"
            if path == "/metrics":
                try:
                    body = generate_latest(registry)
                except Exception:
                    log.exception("collecting metrics failed")
                    self._send(500, "application/json", _json({"error": "collecting failed"}))
                    return
                self._send(200, CONTENT_TYPE_LATEST, body)
            elif path in ("/health", "/health/ready"):
                snapshot = health.snapshot()
                self._send(200 if snapshot["ready"] else 503, "application/json", _json(snapshot))
            elif path == "/health/live":
                self._send(200, "application/json", _json({"live": True}))
            else:
                paths = ["/metrics", "/health", "/health/live", "/health/ready"]
                self._send(404, "application/json", _json({"error": "not found", "paths": paths}))

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no request log: Prometheus and probes ask every few seconds

    return Handler


class ObservabilityServer:
    """``/metrics``, ``/health``, ``/health/live`` and ``/health/ready`` of one process,
    served from a daemon thread. ``port`` 0 binds an ephemeral port (then read ``port``).

    ``start()`` binds (raising ``PortInUse`` if the port is taken) and returns the server;
    ``stop()`` shuts it down and frees the port. Also a context manager.
    """

    def __init__(
        self,
        port: int,
        health: Health,
        registry: CollectorRegistry,
        host: str = DEFAULT_HOST,
    ) -> None:
        self.host = host
        self.health = health
        self.registry = registry
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port once started; the requested one before."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ObservabilityServer:
        if self._server is not None:
            return self
        port = self._requested_port
        try:
            server = _Server((self.host, port), _handler(self.health, self.registry))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(port, self.host) from exc
            raise OSError(
                exc.errno, f"cannot serve health and metrics on {self.host}:{port}: {exc.strerror}"
            ) from exc
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how soon stop() is noticed
            name=f"cdb-observability-{server.server_address[1]}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving and free the port; a no-op if not started."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=1.0)

    def __enter__(self) -> ObservabilityServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
