"""The risk service's loop (R11, R12): a run's adaptive intensity and risk state made
visible outside the log, from the read models (the source of truth), beside the engine,
never in it.

The engine decides from the log alone: each change of the adaptive intensity's parameters
is an ``intensity_changed`` event it reads in order. Each pass here:

- writes the parameters of the run's latest ``intensity_changed`` to Redis under
  ``adaptive_intensity:current_params`` and to the gauges (score, each parameter, the time
  of the last change);
- keeps the run's risk state and exposure under ``risk_state:persistence`` in line with the
  read models (``projections.risk_cache``): loaded at start, healed on every pass.

Redis being away never stops the loop: the cache marks health degraded, and the next pass
that reaches Redis rewrites both keys. A refused password (``RiskCacheAuthError``) is
raised: it is a configuration error, not an outage.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import Engine

from projections.risk_cache import RiskCacheAuthError, RiskStateCache, risk_snapshot_from_store
from projections.service_ports import HealthBoard
from projections.status import NoSuchRun, current_parameters, latest_run_id_of

INTENSITY_KEY = "adaptive_intensity:current_params"
# How often a waiting loop looks for a stop.
STOP_CHECK_S = 0.1


class IntensityGauges:
    """The intensity's metrics, and the count of alerts the service raised."""

    def __init__(self, registry: CollectorRegistry) -> None:
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


class RiskService:
    """Passes over one run (``run_id``, or the newest unfinished run, else the newest)."""

    def __init__(
        self,
        engine: Engine,
        cache: RiskStateCache,
        client: redis.Redis,
        gauges: IntensityGauges,
        health: HealthBoard,
        *,
        store_location: str,
        run_id: str | None = None,
    ) -> None:
        self._engine = engine
        self._cache = cache
        self._client = client
        self._gauges = gauges
        self._health = health
        self._store_location = store_location
        self._run_id = run_id
        self._started = False  # the cache has been loaded once

    def run(
        self,
        interval_s: float,
        should_stop: Callable[[], bool],
        *,
        once: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A pass every ``interval_s`` until ``should_stop()``; with ``once``, one pass, and
        ``NoSuchRun`` if there is no run (a loop waits for one)."""
        while True:
            try:
                self.pass_once()
                self._health.set("store", True, self._store_location)
            except NoSuchRun as exc:
                if once:
                    raise
                self._health.set("store", True, f"waiting: {exc}")
            if once:
                return
            deadline = clock() + interval_s
            while not should_stop() and clock() < deadline:
                sleep(min(STOP_CHECK_S, interval_s))
            if should_stop():
                return

    def pass_once(self) -> None:
        """One pass over the run: the cache loaded (first) or healed, the parameters
        published."""
        run_id = self._run_id or latest_run_id_of(self._engine)
        truth = risk_snapshot_from_store(self._engine, run_id)
        outcome = self._cache.heal(truth) if self._started else self._cache.load_at_start(truth)
        self._started = self._started or outcome != "unavailable"
        parameters = current_parameters(self._engine, truth.run_id)
        if parameters is None:
            return
        shown = self._gauges
        shown.score.labels(run_id=truth.run_id).set(parameters["score"])
        for name in ("risk_pct", "max_total_exposure_pct", "max_symbol_exposure_pct"):
            shown.parameter.labels(run_id=truth.run_id, parameter=name).set(parameters[name])
        shown.parameter.labels(run_id=truth.run_id, parameter="cooldown_minutes").set(
            parameters["cooldown_minutes"]
        )
        shown.updated.labels(run_id=truth.run_id).set(parameters["timestamp"] / 1000)
        try:
            self._client.set(INTENSITY_KEY, orjson.dumps(parameters))
        except redis.AuthenticationError as exc:
            raise RiskCacheAuthError(str(exc)) from None
        except redis.RedisError:
            pass  # the cache's own pass has marked Redis degraded; the next one rewrites
