"""Portfolio & State Manager: the fold of fills and marks into positions and equity."""

from domain.portfolio.ledger import Portfolio, Position

__all__ = ["Portfolio", "Position"]
