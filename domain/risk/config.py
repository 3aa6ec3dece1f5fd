"""RiskConfig: a frozen, validated description of every limit the Risk Engine applies."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SizingConfig(_Frozen):
    """How large an entry is.

    ``fixed_quantity``: always ``quantity`` units of the base asset.
    ``equity_at_risk``: lose at most ``risk_pct`` of equity if the price moves
    ``stop_distance_pct`` against the entry, i.e.
    ``quantity = equity * risk_pct / (price * stop_distance_pct)``. With the default
    stop distance of 100 % this is simply ``risk_pct`` of equity as notional.
    """

    mode: Literal["fixed_quantity", "equity_at_risk"] = "equity_at_risk"
    quantity: float | None = Field(default=None, gt=0)
    risk_pct: float = Field(default=10.0, gt=0, le=100)
    stop_distance_pct: float = Field(default=100.0, gt=0, le=100)

    @model_validator(mode="after")
    def _quantity_for_fixed(self) -> SizingConfig:
        if self.mode == "fixed_quantity" and self.quantity is None:
            raise ValueError("sizing.quantity is required when sizing.mode is fixed_quantity")
        return self


class RiskConfig(_Frozen):
    kill_switch: bool = False
    sizing: SizingConfig = SizingConfig()
    max_symbol_exposure_pct: float = Field(default=50.0, gt=0, le=1000)
    max_total_exposure_pct: float = Field(default=100.0, gt=0, le=1000)
    max_drawdown_pct: float = Field(default=30.0, gt=0, le=100)
    min_order_notional: float = Field(default=0.0, ge=0)
