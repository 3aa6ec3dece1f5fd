"""The portfolio fold with hand-computed values, and its properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.portfolio import Portfolio


def test_open_add_partial_close_and_full_close() -> None:
    p = Portfolio(10_000.0)
    # Buy 2 @ 100, fee 0.2 -> cash 10,000 - 200 - 0.2 = 9,799.8
    assert p.apply_fill("BTC", "BUY", 2.0, 100.0, 0.2) == 0.0
    assert p.cash == pytest.approx(9_799.8)
    assert p.positions["BTC"].avg_entry_price == 100.0
    # Add 2 @ 110, fee 0.22 -> average (200 + 220) / 4 = 105; cash 9,799.8 - 220.22 = 9,579.58
    p.apply_fill("BTC", "BUY", 2.0, 110.0, 0.22)
    assert p.positions["BTC"].avg_entry_price == pytest.approx(105.0)
    assert p.cash == pytest.approx(9_579.58)
    # Mark at 120: equity = 9,579.58 + 4 * 120 = 10,059.58
    p.mark("BTC", 120.0)
    assert p.equity == pytest.approx(10_059.58)
    # Sell 1 @ 120, fee 0.12: P&L = (120 - 105) * 1 - 0.12 - (0.42 * 1/4 = 0.105) = 14.775
    assert p.apply_fill("BTC", "SELL", 1.0, 120.0, 0.12) == pytest.approx(14.775)
    assert p.positions["BTC"].quantity == 3.0
    assert p.positions["BTC"].open_fees == pytest.approx(0.315)
    # Sell 3 @ 90, fee 0.27: P&L = (90 - 105) * 3 - 0.27 - 0.315 = -45.585
    assert p.apply_fill("BTC", "SELL", 3.0, 90.0, 0.27) == pytest.approx(-45.585)
    assert p.positions["BTC"].quantity == 0.0
    assert p.positions["BTC"].avg_entry_price == 0.0
    assert p.realized_pnl == pytest.approx(14.775 - 45.585)
    # Flat: equity is cash and equals initial + realised
    assert p.equity == pytest.approx(p.cash)
    assert p.equity == pytest.approx(10_000.0 + 14.775 - 45.585)
    assert p.total_exposure == 0.0 and p.open_positions == 0


def test_high_water_mark_and_drawdown() -> None:
    p = Portfolio(1_000.0)
    p.apply_fill("ETH", "BUY", 10.0, 100.0, 0.0)  # all in
    p.mark("ETH", 120.0)
    assert p.update_high_water_mark() == 0.0
    assert p.high_water_mark == pytest.approx(1_200.0)
    p.mark("ETH", 90.0)  # equity 900: drawdown (1,200 - 900) / 1,200 = 25 %
    assert p.update_high_water_mark() == pytest.approx(25.0)
    assert p.high_water_mark == pytest.approx(1_200.0)
    assert p.exposure("ETH") == pytest.approx(900.0)


fills = st.lists(
    st.tuples(
        st.sampled_from(["BTC", "ETH"]),
        st.booleans(),  # buy or sell
        st.floats(min_value=0.001, max_value=5.0),
        st.floats(min_value=1.0, max_value=1_000.0),
        st.floats(min_value=0.0, max_value=0.01),  # fee rate
    ),
    max_size=30,
)


def _replay(steps: list[tuple[str, bool, float, float, float]], with_fees: bool) -> Portfolio:
    p = Portfolio(1_000_000.0)
    for symbol, buy, wanted, price, fee_rate in steps:
        held = p.quantity(symbol)
        quantity = wanted if buy else min(wanted, held)  # long-only: sell at most what is held
        if quantity <= 0.0:  # a sell with nothing held
            p.mark(symbol, price)
            continue
        fee = quantity * price * fee_rate if with_fees else 0.0
        p.apply_fill(symbol, "BUY" if buy else "SELL", quantity, price, fee)
        p.mark(symbol, price * 1.01)
    return p


@settings(max_examples=200, deadline=None)
@given(fills)
def test_equity_is_cash_plus_marked_positions(steps: list) -> None:
    p = _replay(steps, with_fees=True)
    marked = sum(pos.quantity * p.marks[s] for s, pos in p.positions.items())
    assert p.equity == pytest.approx(p.cash + marked, rel=1e-12, abs=1e-6)
    assert p.equity == pytest.approx(
        p.initial_cash + p.realized_pnl + p.unrealized_pnl, rel=1e-9, abs=1e-6
    )


@settings(max_examples=200, deadline=None)
@given(fills)
def test_fees_only_ever_reduce_equity(steps: list) -> None:
    with_fees = _replay(steps, with_fees=True)
    without = _replay(steps, with_fees=False)
    assert with_fees.equity <= without.equity + 1e-6


@settings(max_examples=200, deadline=None)
@given(fills)
def test_a_flat_portfolio_has_no_exposure(steps: list) -> None:
    p = _replay(steps, with_fees=True)
    for symbol in list(p.positions):
        held = p.quantity(symbol)
        if held > 0.0:
            p.apply_fill(symbol, "SELL", held, p.marks[symbol], 0.0)
    assert p.open_positions == 0
    assert p.total_exposure == 0.0
    assert p.equity == pytest.approx(p.cash)
