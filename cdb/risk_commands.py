"""``cdb intensity``: the risk service's loop (R11, R12), beside the engine, never in it.

The engine decides from the log alone: each change of the adaptive intensity's parameters
is an ``intensity_changed`` event it reads in order. This loop only makes the current
state visible outside the log, from the read models (the source of truth):

- the parameters of a run's latest ``intensity_changed`` go to Redis under
  ``adaptive_intensity:current_params`` and to ``/metrics`` (score, each parameter, the time
  of the last change);
- the run's risk state and exposure go to Redis under ``risk_state:persistence``, checked
  against the read models at start and on every pass, and healed when they drift by more
  than 5% (``projections.risk_cache``).

Redis being away never stops the loop: health says degraded, and the next pass that
reaches Redis rewrites both keys.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson
import redis
from prometheus_client import Counter, Gauge
from sqlalchemy import Engine

from cdb import bootstrap
from cdb.common import UsageError, seconds_arg, settings_of
from cdb.live_commands import Stop, add_service_arguments, serve
from projections.risk_cache import (
    RiskCacheAuthError,
    RiskStateCache,
    connect,
    redis_url_from_environment,
    risk_snapshot_from_store,
)
from projections.status import NoSuchRun, current_parameters, latest_run_id_of
from streams.observability import RISK_PORT, Health, Metrics

INTENSITY_KEY = "adaptive_intensity:current_params"


def add_parsers(commands: Any, places: argparse.ArgumentParser) -> None:
    intensity = commands.add_parser(
        "intensity",
        help="publish a run's adaptive intensity and risk state to Redis, heal the cache",
        parents=[places],
    )
    intensity.add_argument("--run-id", help="default: the newest unfinished run, else the newest")
    intensity.add_argument(
        "--interval", type=seconds_arg, default=1.0, help="seconds between passes (default 1)"
    )
    intensity.add_argument(
        "--redis",
        metavar="URL",
        help="redis://HOST:PORT/DB (default from $REDIS_HOST and $REDIS_PORT; the password "
        "from $REDIS_PASSWORD)",
    )
    intensity.add_argument("--once", action="store_true", help="one pass, then exit")
    add_service_arguments(intensity, RISK_PORT)


class _IntensityMetrics:
    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.score = Gauge(
            "cdb_intensity_score",
            "Adaptive intensity: 0 DRY .. 1 WET.",
            ["run_id"],
            registry=registry,
        )
        self.parameter = Gauge(
            "cdb_intensity_parameter",
            "The dynamic risk parameters the intensity sets.",
            ["run_id", "parameter"],
            registry=registry,
        )
        self.updated = Gauge(
            "cdb_intensity_last_update_timestamp_seconds",
            "Candle time (Unix seconds) of the latest parameter change.",
            ["run_id"],
            registry=registry,
        )
        self.alerts = Counter(
            "cdb_risk_service_alerts_total",
            "Alerts the risk service raised, by level and code.",
            ["level", "code"],
            registry=registry,
        )


def cmd_intensity(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    url = args.redis or redis_url_from_environment()
    health, metrics = Health(), Metrics()
    health.require("store")
    shown = _IntensityMetrics(metrics)

    def alert(level: str, code: str, message: str) -> None:
        shown.alerts.labels(level=level, code=code).inc()
        sys.stderr.write(f"cdb intensity: {level} {code}: {message}\n")

    try:
        client = connect(url)
    except RiskCacheAuthError as exc:
        raise UsageError(str(exc)) from None
    cache = RiskStateCache(lambda: client, metrics.registry, health, on_alert=alert)
    engine = bootstrap.open_read_models(settings)
    server = serve(args, health, metrics)
    stop = Stop()
    started = False
    try:
        with stop.installed():
            while True:
                try:
                    passed = _pass(engine, args.run_id, cache, client, shown, started)
                    health.set("store", True, settings.store_location)
                except NoSuchRun as exc:
                    if args.once:
                        raise UsageError(str(exc)) from None
                    health.set("store", True, f"waiting: {exc}")
                    passed = False
                except RiskCacheAuthError as exc:
                    raise UsageError(str(exc)) from None
                started = started or passed
                if args.once:
                    break
                deadline = time.monotonic() + args.interval
                while not stop() and time.monotonic() < deadline:
                    time.sleep(min(0.1, args.interval))
                if stop():
                    break
    finally:
        health.mark_stopping()
        if server is not None:
            server.stop()
        engine.dispose()
        client.close()
    return 0


def _pass(
    engine: Engine,
    wanted: str | None,
    cache: RiskStateCache,
    client: redis.Redis,
    shown: _IntensityMetrics,
    started: bool,
) -> bool:
    """One pass over the run; True once the risk cache has been loaded."""
    run_id = wanted or latest_run_id_of(engine)
    truth = risk_snapshot_from_store(engine, run_id)
    outcome = cache.heal(truth) if started else cache.load_at_start(truth)
    parameters = current_parameters(engine, truth.run_id)
    if parameters is not None:
        shown.score.labels(run_id=truth.run_id).set(parameters["score"])
        for name in ("risk_pct", "max_total_exposure_pct", "max_symbol_exposure_pct"):
            shown.parameter.labels(run_id=truth.run_id, parameter=name).set(parameters[name])
        shown.parameter.labels(run_id=truth.run_id, parameter="cooldown_minutes").set(
            parameters["cooldown_minutes"]
        )
        shown.updated.labels(run_id=truth.run_id).set(parameters["timestamp"] / 1000)
        try:
            client.set(INTENSITY_KEY, orjson.dumps(parameters))
        except redis.AuthenticationError as exc:
            raise RiskCacheAuthError(str(exc)) from None
        except redis.RedisError:
            pass  # the cache's own pass has marked Redis degraded; the next one rewrites
    return outcome != "unavailable"
