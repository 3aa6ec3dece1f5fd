"""The golden run's inputs (tests/golden): two small candle files with bad rows, and the
strategy and risk configuration they are run with."""

from __future__ import annotations

from pathlib import Path

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
GOLDEN_RISK = GOLDEN / "risk.toml"


def golden_backtest_args(risk_config: Path = GOLDEN_RISK) -> list[str]:
    """``cdb backtest`` arguments of the golden run (under ``risk_config``)."""
    return [
        "backtest",
        "--data",
        str(GOLDEN / "golden_BTC-USD_30m.csv"),
        "--data",
        str(GOLDEN / "golden_ETH-USD_30m.csv"),
        "--strategy",
        "sma_cross",
        "--param",
        "fast=5",
        "--param",
        "slow=20",
        "--risk-config",
        str(risk_config),
        "--no-progress",
    ]
