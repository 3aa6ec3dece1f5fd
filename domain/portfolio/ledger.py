"""The portfolio fold: cash, positions, marks, high-water mark and drawdown."""

from __future__ import annotations

from dataclasses import dataclass, replace

from domain.events.execution import Side
from domain.state import StateModel


@dataclass(slots=True)
class Position:
    """One symbol's holding. ``open_fees`` are entry fees not yet realised by an exit."""

    quantity: float = 0.0
    avg_entry_price: float = 0.0
    open_fees: float = 0.0
    realized_pnl: float = 0.0


class PortfolioState(StateModel):
    """The portfolio's state; its initial cash comes from the run's configuration."""

    cash: float
    positions: dict[str, Position]  # in the order the symbols were first filled
    marks: dict[str, float]  # in the order the symbols were first marked
    realized_pnl: float
    high_water_mark: float
    drawdown_pct: float


class Portfolio:
    """Folds fills and marks into the portfolio's state.

    Guarantees, for any sequence of fills and marks:
    ``equity == cash + sum(quantity * mark)``; ``equity == initial_cash + realized_pnl +
    unrealized_pnl``; a fee only ever lowers equity; a flat portfolio has no exposure.
    """

    __slots__ = (
        "_drawdown_pct",
        "cash",
        "high_water_mark",
        "initial_cash",
        "marks",
        "open_count",
        "positions",
        "realized_pnl",
    )

    def __init__(self, initial_cash: float) -> None:
        self.initial_cash = initial_cash
        self.cash = initial_cash
        self.positions: dict[str, Position] = {}
        self.marks: dict[str, float] = {}
        self.realized_pnl = 0.0
        self.open_count = 0  # positions with a non-zero quantity, kept for the hot path
        self.high_water_mark = initial_cash
        self._drawdown_pct = 0.0

    def apply_fill(
        self, symbol: str, side: Side, quantity: float, price: float, fee: float
    ) -> float:
        """Apply a fill; return the P&L it realised (net of its fee and its share of entry fees)."""
        position = self.positions.get(symbol)
        if position is None:
            position = self.positions[symbol] = Position()
        self.marks[symbol] = price
        signed = quantity if side == "BUY" else -quantity
        held = position.quantity
        realized = 0.0
        if held == 0.0 or (held > 0.0) == (signed > 0.0):
            # Opening or adding: the fee waits in open_fees until the position is reduced.
            new_quantity = held + signed
            position.avg_entry_price = (
                held * position.avg_entry_price + signed * price
            ) / new_quantity
            position.quantity = new_quantity
            position.open_fees += fee
        else:
            closed = min(abs(signed), abs(held))
            direction = 1.0 if held > 0.0 else -1.0
            fee_share = position.open_fees * closed / abs(held)
            realized = direction * (price - position.avg_entry_price) * closed - fee - fee_share
            position.open_fees -= fee_share
            new_quantity = held + signed
            if abs(new_quantity) <= abs(held) * 1e-12:
                new_quantity = 0.0
            if new_quantity == 0.0 or (new_quantity > 0.0) == (held > 0.0):
                position.quantity = new_quantity
                if new_quantity == 0.0:
                    position.avg_entry_price = 0.0
                    position.open_fees = 0.0
            else:
                # Flipped through zero: the remainder opens at this price, fee already paid.
                position.quantity = new_quantity
                position.avg_entry_price = price
                position.open_fees = 0.0
            position.realized_pnl += realized
            self.realized_pnl += realized
        self.cash -= signed * price + fee
        if (held == 0.0) != (position.quantity == 0.0):
            self.open_count += 1 if held == 0.0 else -1
        return realized

    def state(self) -> PortfolioState:
        # The orders of positions and marks are kept: equity and exposure are sums in
        # that order, and float sums in another order may differ in the last bit.
        return PortfolioState(
            cash=self.cash,
            positions={symbol: replace(p) for symbol, p in self.positions.items()},
            marks=dict(self.marks),
            realized_pnl=self.realized_pnl,
            high_water_mark=self.high_water_mark,
            drawdown_pct=self._drawdown_pct,
        )

    def restore(self, state: PortfolioState) -> None:
        """Take ``state`` (what ``state()`` gave) as this portfolio's."""
        missing = [
            symbol
            for symbol, p in state.positions.items()
            if p.quantity and symbol not in state.marks
        ]
        if missing:
            raise ValueError(f"open positions without a mark: {', '.join(missing)}")
        self.cash = state.cash
        self.positions = {symbol: replace(p) for symbol, p in state.positions.items()}
        self.marks = dict(state.marks)
        self.realized_pnl = state.realized_pnl
        self.open_count = sum(1 for p in self.positions.values() if p.quantity)
        self.high_water_mark = state.high_water_mark
        self._drawdown_pct = state.drawdown_pct

    def mark(self, symbol: str, price: float) -> None:
        self.marks[symbol] = price

    @property
    def equity(self) -> float:
        equity = self.cash
        marks = self.marks
        for symbol, position in self.positions.items():
            if position.quantity:
                equity += position.quantity * marks[symbol]
        return equity

    def update_high_water_mark(self, equity: float | None = None) -> float:
        """Refresh the high-water mark from current equity; return drawdown in percent."""
        if equity is None:
            equity = self.equity
        self.high_water_mark = max(self.high_water_mark, equity)
        hwm = self.high_water_mark
        self._drawdown_pct = 0.0 if hwm <= 0.0 else max(0.0, (hwm - equity) / hwm * 100.0)
        return self._drawdown_pct

    @property
    def drawdown_pct(self) -> float:
        return self._drawdown_pct

    def exposure(self, symbol: str) -> float:
        position = self.positions.get(symbol)
        if position is None or not position.quantity:
            return 0.0
        return abs(position.quantity) * self.marks[symbol]

    @property
    def total_exposure(self) -> float:
        return sum(self.exposure(symbol) for symbol in self.positions)

    @property
    def unrealized_pnl(self) -> float:
        return sum(
            position.quantity * (self.marks[symbol] - position.avg_entry_price) - position.open_fees
            for symbol, position in self.positions.items()
            if position.quantity
        )

    @property
    def open_positions(self) -> int:
        return self.open_count

    def quantity(self, symbol: str) -> float:
        position = self.positions.get(symbol)
        return 0.0 if position is None else position.quantity
