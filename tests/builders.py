"""Test builders: one place that knows how to make domain values with sensible defaults."""

from __future__ import annotations

from typing import Any

from domain.events import Candle
from domain.risk import OrderProposal, RiskConfig, RiskContext, SizingConfig


def candle(
    close: float = 100.0,
    *,
    symbol: str = "BTC_USD",
    timestamp: int = 0,
    open_: float | None = None,
    high: float | None = None,
    low: float | None = None,
    volume: float = 1.0,
    interval_ms: int = 60_000,
) -> Candle:
    open_ = close if open_ is None else open_
    high = max(open_, close) if high is None else high
    low = min(open_, close) if low is None else low
    return Candle(symbol, timestamp, open_, high, low, close, volume, "1m", interval_ms)


def candles(closes: list[float], *, symbol: str = "BTC_USD", start: int = 0) -> list[Candle]:
    return [candle(c, symbol=symbol, timestamp=start + i * 60_000) for i, c in enumerate(closes)]


def risk_config(**overrides: Any) -> RiskConfig:
    sizing = overrides.pop("sizing", None)
    if isinstance(sizing, dict):
        sizing = SizingConfig(**sizing)
    if sizing is not None:
        overrides["sizing"] = sizing
    return RiskConfig(**overrides)


def proposal(
    side: str = "BUY",
    *,
    symbol: str = "BTC_USD",
    price: float = 100.0,
    quantity: float | None = None,
) -> OrderProposal:
    return OrderProposal(symbol, side, price, quantity)  # type: ignore[arg-type]


def context(
    *,
    equity: float = 10_000.0,
    cash: float | None = None,
    positions: dict[str, float] | None = None,
    exposure: dict[str, float] | None = None,
    state: str = "ACTIVE",
    config: RiskConfig | None = None,
) -> RiskContext:
    exposure = exposure or {}
    return RiskContext(
        equity=equity,
        cash=equity if cash is None else cash,
        positions=positions or {},
        exposure_by_symbol=exposure,
        total_exposure=sum(exposure.values()),
        trading_state=state,  # type: ignore[arg-type]
        config=config or RiskConfig(),
    )
