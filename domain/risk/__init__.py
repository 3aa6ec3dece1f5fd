"""Risk Engine: configuration, rules, reason codes and the engine running the chain."""

from domain.risk.config import CooldownConfig, RiskConfig, SizingConfig
from domain.risk.engine import RiskEngine, Verdict, side_for
from domain.risk.memory import Notice, RiskMemory
from domain.risk.monitor import RiskMonitor
from domain.risk.rules import OrderProposal, RiskContext, RiskRule, RuleOutcome, default_rules

__all__ = [
    "CooldownConfig",
    "Notice",
    "OrderProposal",
    "RiskConfig",
    "RiskContext",
    "RiskEngine",
    "RiskMemory",
    "RiskMonitor",
    "RiskRule",
    "RuleOutcome",
    "SizingConfig",
    "Verdict",
    "default_rules",
    "side_for",
]
