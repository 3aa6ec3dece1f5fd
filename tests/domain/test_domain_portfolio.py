"""Portfolio fold: hand-computed positions, cash and P&L, then properties over random fills."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.portfolio import Portfolio, Position

# -- a hand-computed story --------------------------------------------------------------------
# 10_000 cash. BUY 2 @ 100 fee 1; BUY 2 @ 110 fee 1; SELL 1 @ 120 fee 0.5; SELL 3 @ 100 fee 0.3


def _opened() -> Portfolio:
    p = Portfolio(10_000.0)
    p.apply_fill("BTC", "BUY", 2.0, 100.0, 1.0)
    return p


def _added() -> Portfolio:
    p = _opened()
    p.apply_fill("BTC", "BUY", 2.0, 110.0, 1.0)
    return p


def _partly_closed() -> tuple[Portfolio, float]:
    p = _added()
    return p, p.apply_fill("BTC", "SELL", 1.0, 120.0, 0.5)


def test_a_new_portfolio_is_all_cash() -> None:
    p = Portfolio(10_000.0)
    assert (p.cash, p.equity, p.realized_pnl, p.unrealized_pnl) == (10_000.0, 10_000.0, 0.0, 0)
    assert (p.high_water_mark, p.drawdown_pct, p.total_exposure, p.open_positions) == (
        10_000.0,
        0.0,
        0,
        0,
    )
    assert p.quantity("BTC") == 0.0


def test_open() -> None:
    p = _opened()
    # cash 10_000 - 2 * 100 - 1 = 9_799; the fee waits in open_fees
    assert p.positions["BTC"] == Position(2.0, 100.0, 1.0, 0.0)
    assert p.cash == 9_799.0
    # equity 9_799 + 2 * 100 = 9_999; unrealised 2 * (100 - 100) - 1 = -1
    assert p.equity == 9_999.0
    assert p.unrealized_pnl == -1.0
    assert p.realized_pnl == 0.0
    assert p.exposure("BTC") == 200.0
    assert p.open_positions == 1


def test_add_averages_the_entry_price() -> None:
    p = _added()
    # avg (2 * 100 + 2 * 110) / 4 = 105; open fees 1 + 1 = 2; cash 9_799 - 220 - 1 = 9_578
    assert p.positions["BTC"] == Position(4.0, 105.0, 2.0, 0.0)
    assert p.cash == 9_578.0
    # marked at the last fill, 110: equity 9_578 + 440 = 10_018; unrealised 4 * 5 - 2 = 18
    assert p.equity == 10_018.0
    assert p.unrealized_pnl == 18.0
    assert p.open_positions == 1


def test_partial_close_realises_pnl_net_of_exit_fee_and_pro_rata_entry_fees() -> None:
    p, realized = _partly_closed()
    # entry fee share 2 * 1 / 4 = 0.5; (120 - 105) * 1 - 0.5 exit fee - 0.5 share = 14
    assert realized == 14.0
    assert p.realized_pnl == 14.0
    assert p.positions["BTC"] == Position(3.0, 105.0, 1.5, 14.0)
    # cash 9_578 + 120 - 0.5 = 9_697.5; equity 9_697.5 + 3 * 120 = 10_057.5
    assert p.cash == 9_697.5
    assert p.equity == 10_057.5
    # unrealised 3 * (120 - 105) - 1.5 = 43.5; 10_000 + 14 + 43.5 = 10_057.5
    assert p.unrealized_pnl == 43.5
    assert p.open_positions == 1


def test_full_close_realises_the_rest_and_leaves_a_flat_cash_portfolio() -> None:
    p, _ = _partly_closed()
    realized = p.apply_fill("BTC", "SELL", 3.0, 100.0, 0.3)
    # (100 - 105) * 3 - 0.3 exit fee - 1.5 remaining entry fees = -16.8
    assert realized == pytest.approx(-16.8, abs=1e-12)
    # total realised 14 - 16.8 = -2.8
    assert p.realized_pnl == pytest.approx(-2.8, abs=1e-12)
    position = p.positions["BTC"]
    assert (position.quantity, position.avg_entry_price, position.open_fees) == (0.0, 0.0, 0.0)
    assert position.realized_pnl == pytest.approx(-2.8, abs=1e-12)
    # cash 9_697.5 + 300 - 0.3 = 9_997.2 = 10_000 - 2.8, and it is all the equity
    assert p.cash == pytest.approx(9_997.2, abs=1e-9)
    assert p.equity == p.cash
    assert p.unrealized_pnl == 0
    assert p.total_exposure == 0
    assert p.open_positions == 0


def test_marks_move_equity_and_exposure_but_not_cash() -> None:
    p = _opened()
    p.mark("BTC", 130.0)
    # equity 9_799 + 2 * 130 = 10_059; unrealised 2 * 30 - 1 = 59
    assert p.cash == 9_799.0
    assert p.equity == 10_059.0
    assert p.unrealized_pnl == 59.0
    assert p.exposure("BTC") == 260.0
    assert p.total_exposure == 260.0


def test_exposure_sums_over_symbols() -> None:
    p = Portfolio(10_000.0)
    p.apply_fill("BTC", "BUY", 2.0, 100.0, 0.0)
    p.apply_fill("ETH", "BUY", 10.0, 30.0, 0.0)
    p.mark("ETH", 25.0)
    # 2 * 100 + 10 * 25 = 450
    assert p.total_exposure == 450.0
    assert p.open_positions == 2
    assert p.exposure("SOL") == 0.0


def test_high_water_mark_and_drawdown_follow_equity() -> None:
    p = _opened()
    # equity 9_999 below the initial 10_000: (10_000 - 9_999) / 10_000 * 100 = 0.01 %
    assert p.update_high_water_mark() == pytest.approx(0.01, rel=1e-9)
    assert p.high_water_mark == 10_000.0
    p.mark("BTC", 150.0)
    # equity 9_799 + 300 = 10_099: a new high, no drawdown
    assert p.update_high_water_mark() == 0.0
    assert p.high_water_mark == 10_099.0
    p.mark("BTC", 75.0)
    # equity 9_799 + 150 = 9_949: (10_099 - 9_949) / 10_099 * 100 = 1.48529...%
    assert p.update_high_water_mark() == pytest.approx(150.0 / 10_099.0 * 100.0, rel=1e-12)
    assert p.drawdown_pct == pytest.approx(1.4852955738, rel=1e-9)
    assert p.high_water_mark == 10_099.0


def test_drawdown_from_a_given_equity() -> None:
    p = Portfolio(1_000.0)
    assert p.update_high_water_mark(1_200.0) == 0.0
    # (1_200 - 900) / 1_200 * 100 = 25
    assert p.update_high_water_mark(900.0) == pytest.approx(25.0, rel=1e-12)
    assert p.high_water_mark == 1_200.0


def test_closing_and_reopening_counts_open_positions_once() -> None:
    p = Portfolio(1_000.0)
    p.apply_fill("BTC", "BUY", 1.0, 100.0, 0.0)
    p.apply_fill("BTC", "SELL", 1.0, 100.0, 0.0)
    p.apply_fill("BTC", "BUY", 2.0, 90.0, 0.0)
    assert p.open_positions == 1
    assert p.positions["BTC"] == Position(2.0, 90.0, 0.0, 0.0)


# -- properties ---------------------------------------------------------------------------------

SYMBOLS = ("BTC", "ETH", "SOL")


@dataclass(frozen=True)
class Op:
    kind: str  # "buy", "sell" or "mark"
    symbol: str
    amount: float  # buy: quantity; sell: fraction of the position; mark: unused
    price: float
    fee: float


prices = st.floats(1.0, 10_000.0)
ops = st.lists(
    st.one_of(
        st.builds(
            Op,
            st.just("buy"),
            st.sampled_from(SYMBOLS),
            st.floats(0.001, 10.0),
            prices,
            st.floats(0.0, 5.0),
        ),
        st.builds(
            Op,
            st.just("sell"),
            st.sampled_from(SYMBOLS),
            st.one_of(st.just(1.0), st.floats(0.01, 1.0)),
            prices,
            st.floats(0.0, 5.0),
        ),
        st.builds(
            Op, st.just("mark"), st.sampled_from(SYMBOLS), st.just(0.0), prices, st.just(0.0)
        ),
    ),
    max_size=40,
)

# 40 buys of at most 10 units at 10_000 cost 4_000_000 plus 200 of fees: cash never runs out
INITIAL = 5_000_000.0


def _replay(sequence: list[Op], *, with_fees: bool = True) -> tuple[Portfolio, float]:
    """Apply the valid long-only fills of ``sequence``; return the portfolio and fees paid."""
    p = Portfolio(INITIAL)
    fees = 0.0
    for op in sequence:
        fee = op.fee if with_fees else 0.0
        if op.kind == "mark":
            if op.symbol in p.positions:
                p.mark(op.symbol, op.price)
        elif op.kind == "buy":
            p.apply_fill(op.symbol, "BUY", op.amount, op.price, fee)
            fees += fee
        else:
            held = p.quantity(op.symbol)
            if held > 0.0:
                quantity = held if op.amount == 1.0 else held * op.amount
                p.apply_fill(op.symbol, "SELL", quantity, op.price, fee)
                fees += fee
    return p, fees


def _scale(p: Portfolio) -> float:
    return INITIAL + sum(abs(q.quantity) * p.marks[s] for s, q in p.positions.items())


SETTINGS = settings(max_examples=200, derandomize=True, deadline=None)


@SETTINGS
@given(ops)
def test_equity_is_cash_plus_marked_positions(sequence: list[Op]) -> None:
    p, _ = _replay(sequence)
    marked = math.fsum(q.quantity * p.marks[s] for s, q in p.positions.items())
    assert p.equity == pytest.approx(p.cash + marked, abs=1e-9 * _scale(p))


@SETTINGS
@given(ops)
def test_equity_is_initial_cash_plus_realised_plus_unrealised(sequence: list[Op]) -> None:
    p, _ = _replay(sequence)
    assert p.equity == pytest.approx(
        INITIAL + p.realized_pnl + p.unrealized_pnl, abs=1e-9 * _scale(p)
    )


@SETTINGS
@given(ops)
def test_fees_lower_equity_by_exactly_the_fees_paid(sequence: list[Op]) -> None:
    with_fees, fees = _replay(sequence)
    without, _ = _replay(sequence, with_fees=False)
    assert with_fees.equity <= without.equity + 1e-9 * _scale(without)
    assert without.equity - with_fees.equity == pytest.approx(fees, abs=1e-9 * _scale(without))


@SETTINGS
@given(
    quantity=st.floats(0.001, 10.0),
    price=st.floats(1.0, 10_000.0),
    fee=st.floats(0.01, 5.0),
    mark=st.floats(1.0, 10_000.0),
)
def test_one_fee_lowers_equity_by_exactly_that_fee(
    quantity: float, price: float, fee: float, mark: float
) -> None:
    free, paid = Portfolio(INITIAL), Portfolio(INITIAL)
    free.apply_fill("BTC", "BUY", quantity, price, 0.0)
    paid.apply_fill("BTC", "BUY", quantity, price, fee)
    free.mark("BTC", mark)
    paid.mark("BTC", mark)
    assert free.equity - paid.equity == pytest.approx(fee, abs=1e-9 * _scale(free))
    assert paid.equity < free.equity


@SETTINGS
@given(ops)
def test_a_flat_portfolio_has_no_exposure_and_its_equity_is_cash(sequence: list[Op]) -> None:
    p, _ = _replay(sequence)
    for symbol in list(p.positions):
        held = p.quantity(symbol)
        if held > 0.0:
            p.apply_fill(symbol, "SELL", held, p.marks[symbol], 0.1)
    assert p.open_positions == 0
    assert p.total_exposure == 0
    assert p.equity == p.cash
    assert p.unrealized_pnl == 0
    assert p.equity == pytest.approx(INITIAL + p.realized_pnl, abs=1e-9 * INITIAL)


@SETTINGS
@given(ops)
def test_open_positions_counts_the_non_zero_positions(sequence: list[Op]) -> None:
    p, _ = _replay(sequence)
    assert p.open_positions == sum(1 for q in p.positions.values() if q.quantity != 0.0)
    assert all(q.quantity >= 0.0 for q in p.positions.values())
    assert p.cash > 0.0
