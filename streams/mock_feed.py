"""Seeded synthetic candles: a drop-in for ``CsvCandleSource`` when there is no data file.

The model, per candle of length ``dt`` (all returns are log returns):

* Diffusion: a random walk with GARCH(1,1) variance ``h``. The candle's diffusive return
  is ``N(0, h)``; the next candle's variance is ``omega + 0.08 * r**2 + 0.90 * h`` (``r`` the
  diffusive return just drawn). Persistence 0.98 is stationary: a volatility shock halves in
  about 34 candles, at any interval. ``omega`` is ``(1 - 0.08 - 0.90)`` times the
  unconditional variance, which is ``0.55**2 * dt / 365 days`` (55% a year; crypto trades
  every day), and the walk starts at that variance. The log price has no drift.
* Jumps: at most one per candle, with probability ``1 - exp(-0.2 * dt / 1 day)`` (about one
  every five days), signed 50/50, of size 1% plus an exponential with mean 1.5% (so mostly
  1% to 6%). Jumps do not feed the GARCH variance: one 3% jump on 1-minute candles would
  otherwise multiply the volatility by about 11 for the next hour. Diffusion and jumps
  together give about 60% annualised volatility.
* OHLC: each candle is 4 sub-steps of the same walk (each ``N(0, h / 4)``; a jump lands in
  one of them), so high and low are the extremes of the path, not extra noise. Open is the
  previous close, exactly; the first open is the start price.
* Volume, in base units: ``250,000 / start price`` per minute of candle (a 250,000 quote
  notional a minute), times a lognormal factor (log sd 0.5, mean 1), times
  ``1 + 0.5 * |return| / sd`` (``sd`` the unconditional diffusive sd), so volume rises with
  the size of the move.
* Start prices: 40,000 when the base asset (the symbol up to its first ``_``, ``-`` or
  ``.``) contains BTC, 2,000 when it contains ETH, otherwise 100; ``start_price`` overrides.

Why it is deterministic: the candles are a pure function of (symbol, seed, interval, start,
start price, ``GENERATOR_VERSION``). Each source has its own ``random.Random`` seeded from the
sha256 of (seed, symbol) (not ``hash()``, which is salted per process), and only its
``random()`` is used (Mersenne Twister, the same in every CPython): normals are built with
Box-Muller and exponentials with ``log``, because ``gauss`` and ``normalvariate`` have changed
between Python versions. No wall clock, no global random state. ``count`` only truncates the
stream, so a resumed run that regenerates from the start sees the same prefix. ``exp``,
``log``, ``sin`` and ``cos`` come from the platform's libm: another platform may differ in
the last bit.

``sha256`` hashes every parameter that shapes the candles, the model constants and the
version included, so a run id derived from it changes whenever the candles could.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from domain.events import Candle
from domain.events import interval_ms as parse_interval
from streams.csv_source import DataSourceError, DeadLetterSink, format_interval

# Bump when a change alters the candles a set of parameters gives.
GENERATOR_VERSION = 1

DEFAULT_START = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS

ANNUAL_VOLATILITY = 0.55  # of the diffusion; jumps bring the total to about 60%
GARCH_ALPHA = 0.08
GARCH_BETA = 0.90
JUMPS_PER_DAY = 0.2
JUMP_MIN = 0.01
JUMP_MEAN_EXCESS = 0.015
SUB_STEPS = 4  # the sampling loop is unrolled for exactly 4
NOTIONAL_PER_MINUTE = 250_000.0
VOLUME_LOG_SD = 0.5
VOLUME_MOVE_LOADING = 0.5
DEFAULT_PRICES = (("BTC", 40_000.0), ("ETH", 2_000.0))
OTHER_PRICE = 100.0

_MODEL = {
    "annual_volatility": ANNUAL_VOLATILITY,
    "garch_alpha": GARCH_ALPHA,
    "garch_beta": GARCH_BETA,
    "jumps_per_day": JUMPS_PER_DAY,
    "jump_min": JUMP_MIN,
    "jump_mean_excess": JUMP_MEAN_EXCESS,
    "sub_steps": SUB_STEPS,
    "notional_per_minute": NOTIONAL_PER_MINUTE,
    "volume_log_sd": VOLUME_LOG_SD,
    "volume_move_loading": VOLUME_MOVE_LOADING,
}
_SYMBOL = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_BASE_END = re.compile(r"[_.\-]")
_PROGRESS_BLOCK = 65_536
_TWO_PI = 2.0 * math.pi
# ``Candle(...)`` goes through a generated Python ``__new__``; this skips that frame.
_new_candle = cast(Callable[[type[Candle], tuple[Any, ...]], Candle], tuple.__new__)


def default_start_price(symbol: str) -> float:
    """A plausible price for the symbol's base asset (up to its first ``_``, ``-`` or ``.``)."""
    base = _BASE_END.split(symbol.upper(), maxsplit=1)[0]
    for asset, price in DEFAULT_PRICES:
        if asset in base:
            return price
    return OTHER_PRICE


def _iso(ms: int) -> str:
    try:
        moment = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, ValueError, OSError):  # past the year 9999: the number will do
        return f"{ms} ms"
    return f"{moment}.{ms % 1000:03d}Z" if ms % 1000 else f"{moment}Z"


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class MockCandleSource:
    """Endless (or ``count``) seeded candles of one symbol on an exact time grid."""

    def __init__(
        self,
        symbol: str,
        *,
        seed: int,
        interval: str = "1m",
        start: int = DEFAULT_START,
        count: int | None = None,
        start_price: float | None = None,
    ) -> None:
        if not isinstance(symbol, str) or not _SYMBOL.fullmatch(symbol):
            raise DataSourceError(
                f"mock feed: symbol {symbol!r} is empty or malformed: use 1 to 64 letters, "
                "digits, '_', '-' or '.'"
            )
        if not _is_int(seed):
            raise DataSourceError(f"mock feed: seed must be an integer, got {seed!r}")
        try:
            step = parse_interval(interval)
        except (ValueError, AttributeError):
            raise DataSourceError(
                f"mock feed: not an interval: {interval!r} (e.g. 1m, 30m, 4h, 1d)"
            ) from None
        name = format_interval(step)
        if not _is_int(start) or start < 0:
            raise DataSourceError(f"mock feed: start must be a time in ms >= 0, got {start!r}")
        if start % step:
            below = start - start % step
            raise DataSourceError(
                f"mock feed: start {start} ({_iso(start)}) is not on the {name} grid; "
                f"the nearest grid times are {below} ({_iso(below)}) and {below + step} "
                f"({_iso(below + step)})"
            )
        if count is not None and (not _is_int(count) or count < 1):
            raise DataSourceError(f"mock feed: count must be at least 1, got {count!r}")
        if start_price is None:
            price = default_start_price(symbol)
        elif (
            isinstance(start_price, bool)
            or not isinstance(start_price, int | float)
            or not math.isfinite(start_price)
            or start_price <= 0
        ):
            raise DataSourceError(
                f"mock feed: start price must be a positive finite number, got {start_price!r}"
            )
        else:
            price = float(start_price)

        self.symbol: str = symbol
        self.seed: int = seed
        self.interval: str = name
        self.interval_ms: int = step
        self.first_timestamp: int = start
        self.count: int | None = count
        self.start_price: float = price
        shown_count = "endless" if count is None else str(count)
        self.name: str = f"mock {symbol} seed={seed} {name} from {_iso(start)} count={shown_count}"
        if start_price is not None:
            self.name += f" start_price={price:.10g}"
        parameters = {
            "generator": "claire-de-binare streams.mock_feed",
            "version": GENERATOR_VERSION,
            "model": _MODEL,
            "symbol": symbol,
            "seed": seed,
            "interval": name,
            "interval_ms": step,
            "start": start,
            "count": count,
            "start_price": price,
        }
        self.sha256 = hashlib.sha256(_canonical(parameters)).hexdigest()

    def __repr__(self) -> str:
        return f"MockCandleSource({self.name!r})"

    def _rng_seed(self) -> int:
        return int.from_bytes(hashlib.sha256(_canonical([self.seed, self.symbol])).digest())

    def candles(  # noqa: PLR0915 - the sampling loop is unrolled, its state in locals
        self,
        on_dead_letter: DeadLetterSink,
        on_progress: Callable[[int], None] | None = None,
    ) -> Iterator[Candle]:
        """The candles in time order. Nothing goes to ``on_dead_letter``: every generated
        candle is valid. ``on_progress`` gets the number of candles generated since its last
        call, every 65,536 candles and at the end (a CSV source reports bytes read)."""
        del on_dead_letter
        rnd = random.Random(self._rng_seed()).random
        log, sqrt, exp, cos, sin = math.log, math.sqrt, math.exp, math.cos, math.sin
        new, cls, two_pi = _new_candle, Candle, _TWO_PI
        symbol, interval, step = self.symbol, self.interval, self.interval_ms

        dt_days = step / DAY_MS
        var_bar = ANNUAL_VOLATILITY**2 * step / YEAR_MS
        omega = (1.0 - GARCH_ALPHA - GARCH_BETA) * var_bar
        alpha, beta = GARCH_ALPHA, GARCH_BETA
        p_jump = 1.0 - math.exp(-JUMPS_PER_DAY * dt_days)
        jump_slots = SUB_STEPS / p_jump  # u < p_jump, so int(u * jump_slots) picks a sub-step
        jump_min, jump_excess = JUMP_MIN, JUMP_MEAN_EXCESS
        vol_sd = VOLUME_LOG_SD
        base_volume = (
            NOTIONAL_PER_MINUTE * (step / 60_000) / self.start_price * exp(-0.5 * vol_sd**2)
        )
        move_loading = VOLUME_MOVE_LOADING / sqrt(var_bar)

        h = var_bar
        price = self.start_price
        ts = self.first_timestamp
        remaining = self.count
        while remaining is None or remaining > 0:
            block = _PROGRESS_BLOCK if remaining is None else min(_PROGRESS_BLOCK, remaining)
            for _ in range(block):
                # Sub-step sd and two Box-Muller pairs: four N(0, h / 4) increments.
                sd = sqrt(0.25 * h)
                radius = sd * sqrt(-2.0 * log(1.0 - rnd()))
                angle = two_pi * rnd()
                x1 = radius * cos(angle)
                x2 = radius * sin(angle)
                radius = sd * sqrt(-2.0 * log(1.0 - rnd()))
                angle = two_pi * rnd()
                x3 = radius * cos(angle)
                x4 = radius * sin(angle)
                diffusive = x1 + x2 + x3 + x4
                h = omega + alpha * diffusive * diffusive + beta * h

                u = rnd()
                if u < p_jump:
                    size = jump_min - jump_excess * log(1.0 - rnd())
                    if rnd() < 0.5:
                        size = -size
                    slot = int(u * jump_slots)
                    if slot == 0:
                        x1 += size
                    elif slot == 1:
                        x2 += size
                    elif slot == 2:
                        x3 += size
                    else:
                        x4 += size

                c2 = x1 + x2
                c3 = c2 + x3
                ret = c3 + x4
                # Conditional expressions, not max()/min(): a call costs more in this loop.
                top = x1 if x1 > c2 else c2
                top = c3 if c3 > top else top
                bottom = x1 if x1 < c2 else c2
                bottom = c3 if c3 < bottom else bottom
                open_ = price
                price = open_ * exp(ret)
                # The path's extremes, never inside the open-close body (libm's exp is not
                # promised to be monotone in the last bit, so compare in price space).
                high = open_ * exp(top)
                body = price if price > open_ else open_
                high = body if high < body else high
                low = open_ * exp(bottom)
                body = price if price < open_ else open_
                low = body if low > body else low

                radius = sqrt(-2.0 * log(1.0 - rnd()))
                volume = base_volume * exp(vol_sd * radius * cos(two_pi * rnd()))
                volume *= 1.0 + move_loading * (ret if ret > 0.0 else -ret)

                yield new(cls, (symbol, ts, open_, high, low, price, volume, interval, step))
                ts += step
            if remaining is not None:
                remaining -= block
            if on_progress is not None:
                on_progress(block)


def mock_sources(
    symbols: Sequence[str],
    *,
    seed: int,
    interval: str = "1m",
    start: int = DEFAULT_START,
    count: int | None = None,
    start_price: float | None = None,
) -> list[MockCandleSource]:
    """One source per symbol, all with the same parameters (each symbol its own stream)."""
    if isinstance(symbols, str):
        raise DataSourceError(f"mock feed: expected a list of symbols, got the string {symbols!r}")
    if not symbols:
        raise DataSourceError("mock feed: no symbols")
    seen: set[str] = set()
    for symbol in symbols:
        if symbol in seen:
            raise DataSourceError(f"mock feed: duplicate symbol {symbol!r}")
        seen.add(symbol)
    return [
        MockCandleSource(
            symbol,
            seed=seed,
            interval=interval,
            start=start,
            count=count,
            start_price=start_price,
        )
        for symbol in symbols
    ]
