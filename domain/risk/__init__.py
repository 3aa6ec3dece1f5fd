"""Risk Engine: configuration, rules, reason codes and the engine running the chain."""

from domain.risk.config import RiskConfig, SizingConfig
from domain.risk.engine import RiskEngine, Verdict, side_for
from domain.risk.rules import OrderProposal, RiskContext, RiskRule, RuleOutcome, default_rules

__all__ = [
    "OrderProposal",
    "RiskConfig",
    "RiskContext",
    "RiskEngine",
    "RiskRule",
    "RuleOutcome",
    "SizingConfig",
    "Verdict",
    "default_rules",
    "side_for",
]
