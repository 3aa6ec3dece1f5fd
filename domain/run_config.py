"""A backtest's configuration, and the hash that identifies it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from domain.events import BacktestRunMetadata, DataSource, event_id_for
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


def run_metadata_event(
    run_id: str,
    timestamp: int,
    code_version: str,
    config: BacktestConfig,
    data_sources: list[DataSource],
) -> BacktestRunMetadata:
    """The first event of a run: everything needed to reproduce it."""
    return BacktestRunMetadata(
        event_id=event_id_for(run_id, "run_metadata", 0),
        run_id=run_id,
        sequence=0,
        timestamp=timestamp,
        code_version=code_version,
        strategy_id=config.strategy_id,
        config=config.model_dump(mode="json"),
        config_hash=config.config_hash(),
        data_sources=tuple(data_sources),
        seed=config.seed,
    )
