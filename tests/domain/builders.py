"""Builders for the domain tests: one place that makes domain values with plain defaults.

Every builder takes keyword overrides, so a test names only what it is about.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from domain.events import (
    Alert,
    BacktestRunMetadata,
    Bar,
    Candle,
    DataSource,
    DeadLetter,
    Event,
    IntensityChanged,
    MarketDataCompleted,
    MarketDataEvent,
    PortfolioSnapshot,
    PositionState,
    RiskDecision,
    RiskState,
    RunCompleted,
    RunStatistics,
    SimulatedOrder,
    SimulatedTrade,
    StrategySignal,
)
from domain.execution import CostModel
from domain.pipeline import PaperTradingPipeline
from domain.risk import OrderProposal, RiskConfig, RiskContext, RiskEngine, SizingConfig
from domain.strategies import SignalIntent

RUN_ID = "run"
MINUTE_MS = 60_000

# -- market data ----------------------------------------------------------------------------


def candle(
    close: float = 100.0,
    *,
    symbol: str = "BTC_USD",
    timestamp: int = 0,
    open_: float | None = None,
    high: float | None = None,
    low: float | None = None,
    volume: float = 1.0,
    interval: str = "1m",
    interval_ms: int = MINUTE_MS,
) -> Candle:
    """A candle; open defaults to the close, high/low to the extremes of open and close."""
    open_ = close if open_ is None else open_
    high = max(open_, close) if high is None else high
    low = min(open_, close) if low is None else low
    return Candle(symbol, timestamp, open_, high, low, close, volume, interval, interval_ms)


def closes(values: list[float], *, symbol: str = "BTC_USD") -> list[Candle]:
    """One-minute candles with the given closes (open == close), from timestamp 0."""
    return [candle(v, symbol=symbol, timestamp=i * MINUTE_MS) for i, v in enumerate(values)]


def bars(rows: list[tuple[float, float, float, float]], *, symbol: str = "BTC_USD") -> list[Candle]:
    """One-minute candles from (open, high, low, close) rows, from timestamp 0."""
    return [
        candle(c, open_=o, high=h, low=lo, symbol=symbol, timestamp=i * MINUTE_MS)
        for i, (o, h, lo, c) in enumerate(rows)
    ]


# -- risk ---------------------------------------------------------------------------------------


def sizing(**overrides: Any) -> SizingConfig:
    return SizingConfig(**overrides)


def fixed(quantity: float) -> SizingConfig:
    return SizingConfig(mode="fixed_quantity", quantity=quantity)


def risk_config(**overrides: Any) -> RiskConfig:
    """A RiskConfig; ``sizing`` may be a SizingConfig or a dict of its fields."""
    raw_sizing = overrides.pop("sizing", None)
    if isinstance(raw_sizing, dict):
        raw_sizing = SizingConfig(**raw_sizing)
    if raw_sizing is not None:
        overrides["sizing"] = raw_sizing
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
    """A RiskContext; cash defaults to equity, total exposure is the sum of ``exposure``."""
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


# -- pipeline -----------------------------------------------------------------------------------


class Scripted:
    """A fake strategy: signals the scripted direction on the given candle numbers (from 0)."""

    strategy_id: ClassVar[str] = "scripted"

    def __init__(self, script: dict[int, str]) -> None:
        self.script = script
        self.seen = 0

    def on_candle(self, candle: Bar) -> SignalIntent | None:
        direction = self.script.get(self.seen)
        self.seen += 1
        if direction is None:
            return None
        return SignalIntent(direction, "SCRIPTED", None)  # type: ignore[arg-type]

    def state(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.seen = int(state["seen"])


def pipeline(
    script: dict[int, str],
    *,
    config: RiskConfig | None = None,
    fee_bps: float = 0.0,
    slippage_bps: float = 0.0,
    initial_cash: float = 1_000.0,
) -> PaperTradingPipeline:
    """A pipeline with a scripted strategy; by default 1 unit per entry, no fees, no limits
    that a 1-unit order at a price near 100 could reach."""
    return PaperTradingPipeline(
        run_id=RUN_ID,
        strategy_id=Scripted.strategy_id,
        strategy_factory=lambda: Scripted(script),
        risk_engine=RiskEngine(
            config
            or risk_config(
                sizing=fixed(1.0), max_symbol_exposure_pct=1000, max_total_exposure_pct=1000
            )
        ),
        cost=CostModel(fee_bps=fee_bps, slippage_bps=slippage_bps),
        initial_cash=initial_cash,
        interval_ms=MINUTE_MS,
    )


def run(p: PaperTradingPipeline, series: list[Candle], dead_letters: int = 0) -> list[Event]:
    """Every event a run over ``series`` emits: per-candle events, then ``finish``."""
    out: list[Event] = []
    for c in series:
        out.extend(p.on_candle(c))
    out.extend(p.finish(dead_letters=dead_letters))
    return out


def of(events: list[Event], kind: type[Event]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


# -- events -------------------------------------------------------------------------------------


def envelope(event_type: str, *, sequence: int = 0, causation: str | None = None) -> dict[str, Any]:
    return {
        "event_id": f"{RUN_ID}:{event_type}:{sequence}",
        "run_id": RUN_ID,
        "sequence": sequence,
        "causation_id": causation,
        "timestamp": 1_700_000_000_000,
    }


def run_statistics(**overrides: Any) -> RunStatistics:
    fields: dict[str, Any] = {
        "initial_cash": 1_000.0,
        "final_equity": 1_100.0,
        "total_return_pct": 10.0,
        "cagr_pct": None,
        "max_drawdown_pct": 5.0,
        "sharpe": 1.5,
        "sortino": None,
        "win_rate": 0.5,
        "profit_factor": 2.0,
        "expectancy": 50.0,
        "trades": 2,
        "exposure_time_pct": 40.0,
        "bars": 10,
    }
    fields.update(overrides)
    return RunStatistics(**fields)


def sample_events() -> dict[str, Event]:
    """One populated instance of every event type, by wire type name."""
    samples: list[Event] = [
        MarketDataEvent(
            **envelope("market_data"),
            symbol="BTC_USD",
            open=100.0,
            high=110.0,
            low=90.0,
            close=105.0,
            volume=12.5,
            interval="1m",
        ),
        MarketDataCompleted(**envelope("market_data_completed"), candles=10, dead_letters=1),
        DeadLetter(
            **envelope("dead_letter"), source="btc.csv", line=7, raw="a,b", reason="bad row"
        ),
        StrategySignal(
            **envelope("signal", causation="run:market_data:0"),
            symbol="BTC_USD",
            direction="BUY",
            strength=0.25,
            reason="SMA_CROSS_UP",
            strategy_id="sma_cross",
            price=105.0,
        ),
        RiskDecision(
            **envelope("risk_decision", causation="run:signal:0"),
            symbol="BTC_USD",
            requested_direction="BUY",
            approved=True,
            approved_size=0.5,
            reason_code="SYMBOL_EXPOSURE_RESIZED",
            requested_size=2.0,
        ),
        RiskState(
            **envelope("risk_state"),
            trading_state="HALTED",
            kill_switch=False,
            drawdown_pct=31.0,
            exposure_pct=12.0,
            reason_code="DRAWDOWN_LIMIT_HIT",
        ),
        IntensityChanged(
            **envelope("intensity_changed", causation="run:position_state:0"),
            score=0.35,
            risk_pct=8.5,
            max_total_exposure_pct=67.5,
            max_symbol_exposure_pct=42.5,
            cooldown_minutes=39.0,
            trades=12,
            reason="TRADES_WINDOW",
        ),
        SimulatedOrder(
            **envelope("order", causation="run:risk_decision:0"),
            order_id="SIM_run_000001",
            symbol="BTC_USD",
            side="BUY",
            quantity=0.5,
        ),
        SimulatedTrade(
            **envelope("order_result", causation="run:order:0"),
            order_id="SIM_run_000001",
            status="FILLED",
            symbol="BTC_USD",
            side="BUY",
            filled_quantity=0.5,
            price=106.0,
            fee=0.053,
        ),
        Alert(
            **envelope("alert"),
            level="CRITICAL",
            code="DRAWDOWN_LIMIT_HIT",
            message="Maximum drawdown reached",
        ),
        PositionState(
            **envelope("position_state", causation="run:order_result:0"),
            symbol="BTC_USD",
            quantity=0.5,
            avg_entry_price=106.0,
            realized_pnl=0.0,
            last_price=106.0,
            order_id="SIM_run_000001",
            trade_realized_pnl=0.0,
        ),
        PortfolioSnapshot(
            **envelope("portfolio_snapshot"),
            cash=946.947,
            equity=999.947,
            high_water_mark=1_000.0,
            drawdown_pct=0.0053,
            exposure=53.0,
            exposure_pct=5.3,
            realized_pnl=0.0,
            open_positions=1,
        ),
        BacktestRunMetadata(
            **envelope("run_metadata"),
            code_version="abc123",
            strategy_id="sma_cross",
            config={"strategy_id": "sma_cross", "strategy_params": {"fast": 5, "slow": 20}},
            config_hash="f" * 64,
            data_sources=(
                DataSource(symbol="BTC_USD", name="btc.csv", sha256="0" * 64, interval="1m"),
            ),
            seed=7,
        ),
        RunCompleted(
            **envelope("run_completed"),
            candles=10,
            signals=3,
            orders=2,
            fills=2,
            rejected=1,
            dead_letters=0,
            statistics=run_statistics(),
        ),
    ]
    return {e.type: e for e in samples}
