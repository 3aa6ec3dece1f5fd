"""A backtest's configuration, and the hash that identifies it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from domain.execution import CostModel
from domain.risk import RiskConfig


class BacktestConfig(BaseModel):
    """Everything, besides the data, that decides a run's output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy_id: str
    strategy_params: dict[str, Any] = Field(default_factory=dict)
    risk: RiskConfig = RiskConfig()
    cost: CostModel = CostModel()
    initial_cash: float = Field(default=10_000.0, gt=0)
    seed: int = 0

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def derived_run_id(config_hash: str, data_hashes: list[str]) -> str:
    """A run id that is a function of configuration and data, never of time or chance."""
    material = "\n".join([config_hash, *data_hashes]).encode()
    return "bt-" + hashlib.sha256(material).hexdigest()[:12]
