"""RiskConfig: a frozen, validated description of every limit the Risk Engine applies.

The settings added after the first release are all off by default, and a configuration
that leaves them off dumps exactly as it did before they existed: the dump goes into the
config hash, the run id and the run metadata, so an old configuration must keep its run id.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from domain.intensity import IntensityConfig, IntensityParameters

MINUTES_PER_YEAR = 525_600


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # Fields that are left out of the dump while they hold their default (see module doc).
    _ADDED_LATER: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _dump_without_unused_additions(
        self, handler: SerializerFunctionWrapHandler
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        fields = type(self).model_fields
        for name in self._ADDED_LATER:
            if name in data and getattr(self, name) == fields[name].default:
                del data[name]
        return data


def _below(lower: float | None, upper: float | None, message: str) -> None:
    if lower is not None and upper is not None and lower >= upper:
        raise ValueError(message)


def _at_most(lower: float | None, upper: float | None, message: str) -> None:
    if lower is not None and upper is not None and lower > upper:
        raise ValueError(message)


class SizingConfig(_Frozen):
    """How large an entry is.

    ``fixed_quantity``: always ``quantity`` units of the base asset.
    ``fixed_notional``: always ``notional`` in the quote currency, i.e. ``notional / price``.
    ``equity_at_risk``: lose at most ``risk_pct`` of equity if the price moves
    ``stop_distance_pct`` against the entry, i.e.
    ``quantity = equity * risk_pct / (price * stop_distance_pct)``. With the default
    stop distance of 100 % this is simply ``risk_pct`` of equity as notional.
    """

    _ADDED_LATER = ("notional",)

    mode: Literal["fixed_quantity", "fixed_notional", "equity_at_risk"] = "equity_at_risk"
    quantity: float | None = Field(default=None, gt=0)
    notional: float | None = Field(default=None, gt=0)
    risk_pct: float = Field(default=10.0, gt=0, le=100)
    stop_distance_pct: float = Field(default=100.0, gt=0, le=100)

    @model_validator(mode="after")
    def _amount_for_fixed_modes(self) -> SizingConfig:
        if self.mode == "fixed_quantity" and self.quantity is None:
            raise ValueError("sizing.quantity is required when sizing.mode is fixed_quantity")
        if self.mode == "fixed_notional" and self.notional is None:
            raise ValueError("sizing.notional is required when sizing.mode is fixed_notional")
        return self


class CooldownConfig(_Frozen):
    """Pauses for new entries after losing exits, in minutes of candle time. Unset: no pause.

    ``after_loss_minutes``: in the symbol of a losing exit; ``global_after_loss_minutes``: in
    every symbol; ``after_stop_minutes``: in the symbol of a losing exit whose loss reached
    the sizing stop distance.
    """

    after_loss_minutes: int | None = Field(default=None, gt=0, le=MINUTES_PER_YEAR)
    global_after_loss_minutes: int | None = Field(default=None, gt=0, le=MINUTES_PER_YEAR)
    after_stop_minutes: int | None = Field(default=None, gt=0, le=MINUTES_PER_YEAR)


class RiskConfig(_Frozen):
    _ADDED_LATER = (
        "kill_switch_on_critical",
        "cooldown",
        "min_order_quantity",
        "max_order_quantity",
        "max_order_notional",
        "max_open_positions",
        "drawdown_warning_pct",
        "max_daily_drawdown_pct",
        "daily_drawdown_warning_pct",
        "max_orders_per_minute",
        "max_orders_per_hour",
        "max_orders_per_day",
        "max_consecutive_losses",
        "intensity",
    )

    # pre-checks
    kill_switch: bool = False
    kill_switch_on_critical: bool = False
    cooldown: CooldownConfig | None = None
    # risk per trade
    sizing: SizingConfig = SizingConfig()
    min_order_quantity: float | None = Field(default=None, gt=0)
    max_order_quantity: float | None = Field(default=None, gt=0)
    max_order_notional: float | None = Field(default=None, gt=0)
    # exposure
    max_symbol_exposure_pct: float = Field(default=50.0, gt=0, le=1000)
    max_total_exposure_pct: float = Field(default=100.0, gt=0, le=1000)
    max_open_positions: int | None = Field(default=None, ge=1, le=10_000)
    # drawdown
    max_drawdown_pct: float = Field(default=30.0, gt=0, le=100)
    drawdown_warning_pct: float | None = Field(default=None, gt=0, lt=100)
    max_daily_drawdown_pct: float | None = Field(default=None, gt=0, le=100)
    daily_drawdown_warning_pct: float | None = Field(default=None, gt=0, lt=100)
    min_order_notional: float = Field(default=0.0, ge=0)
    # frequency
    max_orders_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    max_orders_per_hour: int | None = Field(default=None, ge=1, le=1_000_000)
    max_orders_per_day: int | None = Field(default=None, ge=1, le=1_000_000)
    max_consecutive_losses: int | None = Field(default=None, ge=1, le=1_000)
    # adaptive intensity (R12): parameters above that follow the latest closed trades
    intensity: IntensityConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RiskConfig:
        _below(
            self.drawdown_warning_pct,
            self.max_drawdown_pct,
            "drawdown_warning_pct must be below max_drawdown_pct",
        )
        _below(
            self.daily_drawdown_warning_pct,
            self.max_daily_drawdown_pct,
            "daily_drawdown_warning_pct must be below max_daily_drawdown_pct",
        )
        _at_most(
            self.min_order_quantity,
            self.max_order_quantity,
            "min_order_quantity must not be above max_order_quantity",
        )
        _at_most(
            self.min_order_notional,
            self.max_order_notional,
            "min_order_notional must not be above max_order_notional",
        )
        _at_most(
            self.max_orders_per_minute,
            self.max_orders_per_hour,
            "max_orders_per_minute must not be above max_orders_per_hour",
        )
        _at_most(
            self.max_orders_per_hour,
            self.max_orders_per_day,
            "max_orders_per_hour must not be above max_orders_per_day",
        )
        _at_most(
            self.max_orders_per_minute,
            self.max_orders_per_day,
            "max_orders_per_minute must not be above max_orders_per_day",
        )
        return self

    # -- which optional parts of the engine this configuration switches on ----------------------

    @property
    def can_reduce(self) -> bool:
        """Whether anything can move the trading state to REDUCING."""
        return self.max_daily_drawdown_pct is not None or self.max_consecutive_losses is not None

    @property
    def limits_order_rate(self) -> bool:
        return (
            self.max_orders_per_minute is not None
            or self.max_orders_per_hour is not None
            or self.max_orders_per_day is not None
        )

    @property
    def watches_day(self) -> bool:
        """Whether a new UTC day changes anything: the daily drawdown, a losing streak."""
        return self.can_reduce or self.daily_drawdown_warning_pct is not None

    @property
    def watches_levels(self) -> bool:
        """Whether drawdown is watched for more than the total limit."""
        return (
            self.drawdown_warning_pct is not None
            or self.max_daily_drawdown_pct is not None
            or self.daily_drawdown_warning_pct is not None
        )

    @property
    def watches_exits(self) -> bool:
        """Whether a closed trade's P&L matters: cooldowns, losing streaks."""
        return self.cooldown is not None or self.max_consecutive_losses is not None


def with_intensity(config: RiskConfig, parameters: IntensityParameters) -> RiskConfig:
    """``config`` with the adaptive intensity's parameters in place of its static ones:
    risk per trade, the exposure caps and the cooldown after a losing exit (0: none)."""
    cooldown = config.cooldown or CooldownConfig()
    minutes = round(parameters.cooldown_minutes)
    return config.model_copy(
        update={
            "sizing": config.sizing.model_copy(update={"risk_pct": parameters.risk_pct}),
            "max_total_exposure_pct": parameters.max_total_exposure_pct,
            "max_symbol_exposure_pct": parameters.max_symbol_exposure_pct,
            "cooldown": cooldown.model_copy(update={"after_loss_minutes": minutes or None}),
        }
    )
