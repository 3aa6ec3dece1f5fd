"""``cdb intensity``: the risk service (R11, R12), beside the engine, never in it: a run's
adaptive intensity and risk state published to Redis from the read models, the cache
healed when it drifts (``projections.risk_service``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from cdb import bootstrap
from cdb.common import UsageError, seconds_arg
from cdb.long_running import Stop, add_service_arguments, served
from projections.risk_cache import RiskCacheAuthError, RiskStateCache, connect
from projections.risk_service import IntensityGauges, RiskService
from projections.status import NoSuchRun
from streams.observability import INTENSITY_PORT, Health, Metrics


def add_parser(commands: Any, places: argparse.ArgumentParser) -> None:
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
    add_service_arguments(intensity, INTENSITY_PORT)


def run(args: argparse.Namespace, settings: bootstrap.Settings) -> int:
    health, metrics = Health(), Metrics()
    # One pass only reads the read models: on a data directory without them it creates
    # nothing. The loop waits for a run in the store a projector fills.
    with risk_service(
        settings, args.redis, args.run_id, health, metrics, read_only=args.once
    ) as service:
        stop = Stop()
        try:
            with served(args, health, metrics), stop.installed():
                service.run(args.interval, stop, once=args.once)
        except (NoSuchRun, RiskCacheAuthError) as exc:
            raise UsageError(str(exc)) from None
    return 0


@contextlib.contextmanager
def risk_service(
    settings: bootstrap.Settings,
    redis_option: str | None,
    run_id: str | None,
    health: Health,
    metrics: Metrics,
    *,
    read_only: bool = False,
    name: str = "cdb intensity",
) -> Iterator[RiskService]:
    """The risk service over the read models and Redis (``--redis``, else the
    environment's), its gauges and health in ``metrics`` and ``health``: for ``cdb
    intensity`` and for the risk agent, which runs it beside its stage."""
    place = bootstrap.redis_place(settings, redis_option)
    health.require("store")
    gauges = IntensityGauges(metrics.registry)

    def alert(level: str, code: str, message: str) -> None:
        gauges.alerts.labels(level=level, code=code).inc()
        sys.stderr.write(f"{name}: {level} {code}: {message}\n")

    try:
        client = connect(place.url, place.password)
    except RiskCacheAuthError as exc:
        raise UsageError(str(exc)) from None
    try:
        cache = RiskStateCache(lambda: client, metrics.registry, health, on_alert=alert)
        open_store = bootstrap.read_models_for_reading if read_only else bootstrap.open_read_models
        engine = open_store(settings)
        try:
            yield RiskService(
                engine,
                cache,
                client,
                gauges,
                health,
                store_location=settings.store_location,
                run_id=run_id,
            )
        finally:
            engine.dispose()
    finally:
        client.close()
