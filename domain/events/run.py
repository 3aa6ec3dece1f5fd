"""Run metadata and the explicit end of a finite run (topic ``runs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from domain.events.envelope import Event


class DataSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    name: str
    sha256: str
    interval: str


class BacktestRunMetadata(Event):
    """Everything that makes a run reproducible: code, configuration, data, seed."""

    type: Literal["run_metadata"] = "run_metadata"
    code_version: str
    strategy_id: str
    config: dict[str, Any]
    config_hash: str
    data_sources: tuple[DataSource, ...]
    seed: int


class RunStatistics(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_cash: float
    final_equity: float
    total_return_pct: float
    cagr_pct: float | None
    max_drawdown_pct: float
    sharpe: float | None
    sortino: float | None
    win_rate: float | None
    profit_factor: float | None
    expectancy: float | None
    trades: int
    exposure_time_pct: float
    bars: int


class RunCompleted(Event):
    """The end of a finite run is an explicit event, never inferred from a high watermark."""

    type: Literal["run_completed"] = "run_completed"
    candles: int
    signals: int
    orders: int
    fills: int
    rejected: int
    dead_letters: int
    statistics: RunStatistics
