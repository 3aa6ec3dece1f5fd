"""Strategies by id, and how to build one from user-given parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from domain.strategies.base import SignalIntent, Strategy, StrategyParams
from domain.strategies.momentum import MomentumParams, MomentumV1
from domain.strategies.sma_cross import SmaCross, SmaCrossParams

STRATEGIES: Mapping[str, Any] = {
    SmaCross.strategy_id: SmaCross,
    MomentumV1.strategy_id: MomentumV1,
}


class StrategyConfigError(ValueError):
    pass


def strategy_params(strategy_id: str, raw: Mapping[str, Any]) -> StrategyParams:
    """Validate ``raw`` (strings from a command line are coerced) into the strategy's params."""
    cls = STRATEGIES.get(strategy_id)
    if cls is None:
        known = ", ".join(sorted(STRATEGIES))
        raise StrategyConfigError(f"unknown strategy {strategy_id!r} (known: {known})")
    try:
        params: StrategyParams = cls.params_model.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "params"
        raise StrategyConfigError(f"{strategy_id} parameter {where}: {first['msg']}") from None
    return params


def strategy_factory(strategy_id: str, params: StrategyParams) -> Callable[[], Strategy]:
    """A factory making one fresh strategy instance per symbol."""
    cls = STRATEGIES[strategy_id]
    return lambda: cls(params)


__all__ = [
    "STRATEGIES",
    "MomentumParams",
    "MomentumV1",
    "SignalIntent",
    "SmaCross",
    "SmaCrossParams",
    "Strategy",
    "StrategyConfigError",
    "StrategyParams",
    "strategy_factory",
    "strategy_params",
]
