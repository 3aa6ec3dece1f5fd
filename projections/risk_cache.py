"""The risk-state cache in Redis (R11): the read models' risk and exposure, for outside readers.

The read models (Postgres or SQLite) are the single source of truth; Redis only mirrors
them under ``risk_state:persistence`` for dashboards and other services. The value is one
JSON object (a plain string value written with ``SET``, not a hash)::

    {"run_id": "...", "trading_state": "ACTIVE", "kill_switch": false,
     "drawdown_pct": 0.37, "exposure": 1040.3, "exposure_pct": 10.03,
     "positions": {"BTC_USD": 0.0949}, "equity": 10374.9, "as_of": 1512214200000,
     "written_at": 1735689600000}

``as_of`` is the open time (epoch ms) of the run's latest projected candle, ``written_at``
the wall-clock time the value was written (for a reader to see how fresh it is).

At start (``load_at_start``) the cache is written when missing and overwritten when it
drifts from the truth by more than the threshold (5 % by default); at run time
``heal`` (or the ``run_forever`` loop) does the same, counts the heals and raises an alert.

Redis must never block trading: every Redis call has a short socket timeout and at most
one retry, and an outage is never raised to the caller. It marks the health dependency
"redis" not ok (the process reports "degraded"), is counted, and once Redis answers again
the next pass rewrites the cache from the truth whatever it holds. A refused password is
a configuration error, not an outage: it is raised, as ``RiskCacheAuthError``.

Drift (``drift``), in percent, is the largest of:

- exposure and equity: relative, ``|cached - truth| / max(|truth|, 1e-9) * 100``;
- each position's quantity: relative, the same way;
- drawdown_pct and exposure_pct: absolute, in percentage points ``|cached - truth|``
  (they are percentages already: a drawdown of 0.02 % against 0.01 % is not a 100 % error);

and is infinite when the run, the trading state, the kill switch or the set of symbols
held differs, or a value is not a finite number. ``as_of`` is not compared: a cache that
is older but still within the threshold is left alone. A cache is healed when its drift is
strictly greater than the threshold.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import orjson
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Connection, Engine, func, select

from projections import tables
from projections.service_ports import HealthBoard
from projections.status import NoSuchRun, last_closes, latest_run_id, marked_equity

RISK_STATE_KEY = "risk_state:persistence"
DEFAULT_THRESHOLD_PCT = 5.0
DEFAULT_TIMEOUT_S = 0.5
REDIS_DEPENDENCY = "redis"
HEALED_CODE = "RISK_CACHE_HEALED"
# The seed's Redis settings (R14, R15).
REDIS_HOST_ENV = "REDIS_HOST"
REDIS_PORT_ENV = "REDIS_PORT"
REDIS_PASSWORD_ENV = "REDIS_PASSWORD"
DEFAULT_REDIS_PORT = 6379
# Below this a true value counts as zero in a relative difference.
TINY = 1e-9

log = logging.getLogger("cdb.risk_cache")

CacheOutcome = Literal["written", "healed", "kept", "rebuilt", "unavailable"]
"""What a pass did: the cache was missing and is ``written``; it drifted beyond the
threshold (or was unreadable, or of another run) and is ``healed``; it is within the
threshold and ``kept``; Redis came back after an outage and the cache is ``rebuilt``
from the truth (written even within the threshold); Redis is ``unavailable`` (nothing
written, nothing raised)."""

OnAlert = Callable[[str, str, str], None]
"""``on_alert(level, code, message)``: where the cache's alerts go (the caller decides)."""


class RiskCacheAuthError(RuntimeError):
    """Redis refused the credentials: a configuration error, raised (unlike an outage)."""


# -- the snapshot -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RiskSnapshot:
    """A run's risk and exposure as the read models show it (the truth), or as cached.

    ``exposure`` is the gross notional of the open positions, each marked at the last
    projected close of its symbol; ``equity`` is the latest portfolio snapshot's cash plus
    the marked positions; ``exposure_pct`` is exposure over equity (percent);
    ``drawdown_pct`` is from the high-water mark to that equity; ``positions`` maps each
    symbol held to its (signed) quantity; ``as_of`` is the latest candle's open time (ms).
    """

    run_id: str
    trading_state: str
    kill_switch: bool
    drawdown_pct: float
    exposure: float
    exposure_pct: float
    positions: dict[str, float] = field(default_factory=dict)
    equity: float = 0.0
    as_of: int | None = None

    def to_json(self, written_at_ms: int | None = None) -> bytes:
        value: dict[str, Any] = asdict(self)
        if written_at_ms is not None:
            value["written_at"] = written_at_ms
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, raw: bytes | str) -> RiskSnapshot:
        """The snapshot in a cached value; ``ValueError`` if it is not one."""
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        try:
            positions = value.get("positions") or {}
            if not isinstance(positions, dict):
                raise ValueError("positions is not an object")
            as_of = value.get("as_of")
            return cls(
                run_id=_typed(value["run_id"], str),
                trading_state=_typed(value["trading_state"], str),
                kill_switch=_typed(value["kill_switch"], bool),
                drawdown_pct=_number(value["drawdown_pct"]),
                exposure=_number(value["exposure"]),
                exposure_pct=_number(value["exposure_pct"]),
                positions={_typed(s, str): _number(q) for s, q in positions.items()},
                equity=_number(value["equity"]),
                as_of=None if as_of is None else _typed(as_of, int),
            )
        except KeyError as exc:
            raise ValueError(f"field {exc.args[0]!r} missing") from exc


def _typed(value: Any, kind: type[Any]) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{value!r} is not a {kind.__name__}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def drift(cached: RiskSnapshot, truth: RiskSnapshot) -> float:
    """How far ``cached`` is from ``truth``, in percent (see the module's docstring):
    relative for exposure, equity and each quantity, percentage points for drawdown_pct
    and exposure_pct; infinite for another run, trading state, kill switch or symbol set."""
    if (
        cached.run_id != truth.run_id
        or cached.trading_state != truth.trading_state
        or cached.kill_switch != truth.kill_switch
        or set(cached.positions) != set(truth.positions)
    ):
        return math.inf
    pairs = [(cached.exposure, truth.exposure), (cached.equity, truth.equity)]
    pairs += [(cached.positions[s], q) for s, q in truth.positions.items()]
    worst = 0.0
    for got, want in pairs:
        if not math.isfinite(got):
            return math.inf
        worst = max(worst, abs(got - want) / max(abs(want), TINY) * 100.0)
    for got, want in (
        (cached.drawdown_pct, truth.drawdown_pct),
        (cached.exposure_pct, truth.exposure_pct),
    ):
        if not math.isfinite(got):
            return math.inf
        worst = max(worst, abs(got - want))
    return worst


# -- the truth ----------------------------------------------------------------------------------


def risk_snapshot_from_store(engine: Engine, run_id: str | None = None) -> RiskSnapshot:
    """The run's risk snapshot from the read models (the newest unfinished run, else the
    newest, when ``run_id`` is None); ``NoSuchRun`` if there is none.

    The trading state and kill switch are the latest ``risk_states`` row's (ACTIVE and
    off before there is one); equity is the latest ``equity_curve`` row's cash plus the
    open positions marked at the last projected close of their symbol (the run's initial
    cash before the first snapshot); drawdown is from the snapshot's high-water mark to
    that equity, as ``cdb status`` shows it (risk_states rows come only with a change of
    state, their drawdown is that of the moment). All of it is read in one transaction.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # One snapshot of the database for every query below (set in place, before
            # the transaction begins; the pool resets it when the connection goes back).
            conn.execution_options(isolation_level="REPEATABLE READ")
        if run_id is None:
            run_id = latest_run_id(conn)
            if run_id is None:
                raise NoSuchRun("no run in the read models yet")
        return _snapshot(conn, run_id)


def _snapshot(conn: Connection, run_id: str) -> RiskSnapshot:
    initial_cash = conn.execute(
        select(tables.runs.c.initial_cash).where(tables.runs.c.run_id == run_id)
    ).first()
    if initial_cash is None:
        raise NoSuchRun(f"no run {run_id!r} in the read models")
    states = tables.risk_states
    state = conn.execute(
        select(states.c.trading_state, states.c.kill_switch, states.c.drawdown_pct)
        .where(states.c.run_id == run_id)
        .order_by(states.c.sequence.desc())
        .limit(1)
    ).first()
    curve = tables.equity_curve
    portfolio = conn.execute(
        select(curve.c.cash, curve.c.high_water_mark)
        .where(curve.c.run_id == run_id)
        .order_by(curve.c.sequence.desc())
        .limit(1)
    ).first()
    pos = tables.positions
    held = conn.execute(
        select(pos.c.symbol, pos.c.quantity, pos.c.last_price)
        .where(pos.c.run_id == run_id, pos.c.quantity != 0)
        .order_by(pos.c.symbol)
    ).all()
    candles = tables.candles
    closes = last_closes(conn, run_id, [str(symbol) for symbol, _, _ in held])
    positions: dict[str, float] = {}
    exposure = marked = 0.0
    for symbol, quantity, last_price in held:
        price = closes.get(str(symbol), last_price)
        positions[str(symbol)] = float(quantity)
        if price is not None:
            exposure += abs(float(quantity)) * float(price)
            marked += float(quantity) * float(price)
    as_of = conn.execute(
        select(func.max(candles.c.timestamp)).where(candles.c.run_id == run_id)
    ).scalar()

    if portfolio is not None:
        equity, _, drawdown = marked_equity(portfolio.cash, portfolio.high_water_mark, marked)
    else:
        equity = float(initial_cash[0] or 0.0) + marked
        drawdown = float(state.drawdown_pct or 0.0) if state is not None else 0.0
    return RiskSnapshot(
        run_id=run_id,
        trading_state=str(state.trading_state) if state is not None else "ACTIVE",
        kill_switch=bool(state.kill_switch) if state is not None else False,
        drawdown_pct=drawdown,
        exposure=exposure,
        exposure_pct=exposure / equity * 100.0 if equity > 0 else 0.0,
        positions=positions,
        equity=equity,
        as_of=None if as_of is None else int(as_of),
    )


# -- Redis --------------------------------------------------------------------------------------


def redis_url_from_environment(environ: Mapping[str, str] | None = None) -> str:
    """``redis://REDIS_HOST:REDIS_PORT/0`` from the seed's settings (localhost:6379 by
    default). The password is not put in the URL: ``connect`` reads REDIS_PASSWORD."""
    env = os.environ if environ is None else environ
    host = env.get(REDIS_HOST_ENV, "").strip() or "localhost"
    port = env.get(REDIS_PORT_ENV, "").strip() or str(DEFAULT_REDIS_PORT)
    return f"redis://{host}:{port}/0"


def describe(client: redis.Redis) -> str:
    """Where ``client`` connects (a socket path or host:port), without credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', DEFAULT_REDIS_PORT)}"


def _auth_error(client: redis.Redis, exc: redis.AuthenticationError) -> RiskCacheAuthError:
    where = describe(client)
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if client.connection_pool.connection_kwargs.get("password"):
        message = f"Redis refused the password for {where} (REDIS_PASSWORD): {reason}"
    else:
        message = f"Redis at {where} requires a password: set REDIS_PASSWORD"
    return RiskCacheAuthError(message)


def connect(
    url: str, password: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> redis.Redis:
    """A Redis client for ``url`` (``redis://HOST:PORT/DB`` or ``unix:///PATH``).

    The password is ``password`` if given, else the URL's, else $REDIS_PASSWORD (an empty
    one is none). Connecting and every command time out after ``timeout_s`` and are
    retried at most once, without back-off, so a dead Redis never holds a caller for long.
    The client is checked with a PING: a refused password raises ``RiskCacheAuthError``;
    an unreachable Redis does not raise here (the cache reports it when used).
    """
    chosen = password
    if chosen is None:
        in_url = urlsplit(url).password
        chosen = unquote(in_url) if in_url else os.environ.get(REDIS_PASSWORD_ENV)
    client = redis.Redis.from_url(
        url,
        password=chosen or None,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
    )
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        client.close()
        raise _auth_error(client, exc) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("Redis at %s is not reachable yet: %s", describe(client), exc)
    return client


# -- the cache ----------------------------------------------------------------------------------


class RiskStateCache:
    """Keeps ``risk_state:persistence`` in Redis in line with the read models.

    ``client_factory`` builds the Redis client, on first use (e.g. ``lambda: connect(url)``;
    see ``from_url``). Metrics go to ``registry``: ``cdb_risk_cache_heals_total``,
    ``cdb_risk_cache_errors_total`` (Redis failures) and ``cdb_risk_cache_drift_pct`` (the
    drift found by the last comparison; +Inf for an unreadable value or another run's).
    ``health`` gets the dependency "redis". ``on_alert(level, code, message)`` receives a
    WARNING ``RISK_CACHE_HEALED`` for every heal. Safe to use from several threads.
    """

    def __init__(
        self,
        client_factory: Callable[[], redis.Redis],
        registry: CollectorRegistry | None = None,
        health: HealthBoard | None = None,
        threshold_pct: float = DEFAULT_THRESHOLD_PCT,
        on_alert: OnAlert | None = None,
        *,
        key: str = RISK_STATE_KEY,
    ) -> None:
        if not threshold_pct >= 0:
            raise ValueError(f"threshold_pct must be a number >= 0, not {threshold_pct!r}")
        self.registry = CollectorRegistry() if registry is None else registry
        self.health = health
        self.threshold_pct = threshold_pct
        self.on_alert = on_alert
        self.key = key
        self._client_factory = client_factory
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()
        # An outage was seen: the next pass that reaches Redis rewrites the cache.
        self._rebuild = False
        self.last_drift_pct: float | None = None
        r = self.registry
        self._heals = Counter(
            "cdb_risk_cache_heals_total",
            "Times the Redis risk-state cache drifted beyond the threshold and was overwritten.",
            registry=r,
        )
        self._errors = Counter(
            "cdb_risk_cache_errors_total",
            "Redis failures (unreachable, timed out) met by the risk-state cache.",
            registry=r,
        )
        self._drift = Gauge(
            "cdb_risk_cache_drift_pct",
            "Drift (percent) of the Redis risk-state cache from the read models, last checked.",
            registry=r,
        )
        if health is not None:
            health.require(REDIS_DEPENDENCY)

    @classmethod
    def from_url(
        cls,
        url: str,
        password: str | None = None,
        registry: CollectorRegistry | None = None,
        health: HealthBoard | None = None,
        threshold_pct: float = DEFAULT_THRESHOLD_PCT,
        on_alert: OnAlert | None = None,
        *,
        key: str = RISK_STATE_KEY,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> RiskStateCache:
        """A cache on ``connect(url, password)``, connected on first use."""
        return cls(
            lambda: connect(url, password, timeout_s=timeout_s),
            registry,
            health,
            threshold_pct,
            on_alert,
            key=key,
        )

    # -- passes ---------------------------------------------------------------------------------

    def load_at_start(self, truth: RiskSnapshot) -> CacheOutcome:
        """At start (R11): write the cache if missing, overwrite it if it drifts beyond the
        threshold, else keep it. Never raises for an outage ("unavailable")."""
        return self._sync(truth)

    def heal(self, truth: RiskSnapshot) -> CacheOutcome:
        """One auto-heal pass: compare the cache with ``truth``; overwrite it when the drift
        is strictly greater than the threshold (counted, alerted) or when Redis is back
        after an outage ("rebuilt"). Never raises for an outage ("unavailable")."""
        return self._sync(truth)

    def read(self) -> RiskSnapshot | None:
        """The cached snapshot, None if missing or unreadable; raises Redis's errors."""
        raw = self._redis().get(self.key)
        if raw is None:
            return None
        try:
            return RiskSnapshot.from_json(raw)
        except ValueError:
            return None

    def run_forever(
        self,
        truth_fn: Callable[[], RiskSnapshot | None],
        interval_s: float,
        should_stop: Callable[[], bool],
        *,
        slice_s: float = 0.1,
    ) -> int:
        """Heal every ``interval_s`` seconds until ``should_stop()`` (checked every
        ``slice_s`` seconds while waiting); returns the passes made. The first pass runs at
        once. ``truth_fn`` returns the truth, or None to skip a pass (no run yet); if it
        raises, the pass is skipped and logged. Only ``RiskCacheAuthError`` ends the loop."""
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, not {interval_s!r}")
        passes = 0
        while not should_stop():
            started = time.monotonic()
            try:
                truth = truth_fn()
            except Exception:
                log.exception("reading the risk state from the read models failed")
                truth = None
            if truth is not None:
                self.heal(truth)
                passes += 1
            deadline = started + interval_s
            while not should_stop():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(slice_s, left))
        return passes

    # -- internals ------------------------------------------------------------------------------

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _sync(self, truth: RiskSnapshot) -> CacheOutcome:
        with self._lock:
            try:
                outcome, found = self._compare_and_write(truth)
            except RiskCacheAuthError as exc:  # from the client factory (``connect``)
                self._unhealthy(str(exc))
                raise
            except redis.AuthenticationError as exc:
                error = (
                    _auth_error(self._client, exc)
                    if self._client is not None
                    else RiskCacheAuthError(f"Redis refused the credentials: {exc}")
                )
                self._unhealthy(str(error))
                raise error from None
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._outage(exc)
                return "unavailable"
            except redis.RedisError as exc:  # e.g. a read-only replica or out of memory
                self._outage(exc)
                return "unavailable"
            self._rebuild = False
            if self.health is not None:
                self.health.set(REDIS_DEPENDENCY, True, f"cache {self.key} {outcome}")
        if outcome == "healed":
            self._heals.inc()
            self._alert(
                "WARNING",
                HEALED_CODE,
                f"Redis risk-state cache {self.key} of run {truth.run_id} drifted "
                f"{_percent(found)} from the read models (threshold "
                f"{self.threshold_pct:g}%): overwritten from the read models.",
            )
        return outcome

    def _compare_and_write(self, truth: RiskSnapshot) -> tuple[CacheOutcome, float]:
        client = self._redis()
        try:
            raw = client.get(self.key)
        except redis.ResponseError:  # not a string value (e.g. WRONGTYPE): unreadable
            raw = b""
        found = math.nan
        outcome: CacheOutcome
        if raw is None:
            outcome = "written"
        else:
            try:
                found = drift(RiskSnapshot.from_json(raw), truth)
            except ValueError:
                found = math.inf
            self.last_drift_pct = found
            self._drift.set(found)
            if found > self.threshold_pct:
                outcome = "healed"
            elif self._rebuild:
                outcome = "rebuilt"
            else:
                return "kept", found
        client.set(self.key, truth.to_json(written_at_ms=time.time_ns() // 1_000_000))
        return outcome, found

    def _outage(self, exc: Exception) -> None:
        self._errors.inc()
        self._rebuild = True
        where = describe(self._client) if self._client is not None else "Redis"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self._unhealthy(f"Redis unreachable at {where}: {reason}")
        log.warning("risk-state cache: Redis unreachable at %s: %s", where, reason)

    def _unhealthy(self, detail: str) -> None:
        if self.health is not None:
            self.health.set(REDIS_DEPENDENCY, False, detail)

    def _alert(self, level: str, code: str, message: str) -> None:
        log.warning("%s: %s", code, message)
        if self.on_alert is None:
            return
        try:
            self.on_alert(level, code, message)
        except Exception:  # the caller's sink must not stop the healing
            log.exception("delivering alert %s failed", code)


def _percent(value: float) -> str:
    if math.isinf(value):
        return "beyond comparison (another run, state, kill switch or set of symbols)"
    return f"{value:.2f}%"
