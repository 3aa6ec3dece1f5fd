"""The fill model: next open, fee and slippage in basis points, rejections with reasons."""

from __future__ import annotations

import pytest

from domain.execution import CostModel, fill_at_next_open, order_id_for
from domain.risk import reasons


def test_buy_fills_at_open_plus_slippage_and_pays_the_fee() -> None:
    # open 200, 5 bps slippage -> 200.1; 2 units -> 400.2 notional; 10 bps fee -> 0.4002
    fill = fill_at_next_open("BUY", 2.0, 200.0, CostModel(fee_bps=10, slippage_bps=5), 1e6, 0.0)
    assert fill.status == "FILLED" and fill.reason is None
    assert fill.price == pytest.approx(200.1)
    assert fill.fee == pytest.approx(0.4002)
    assert fill.quantity == 2.0


def test_sell_fills_at_open_minus_slippage() -> None:
    # open 200, 5 bps slippage -> 199.9; 2 units -> 399.8; 10 bps fee -> 0.3998
    fill = fill_at_next_open("SELL", 2.0, 200.0, CostModel(fee_bps=10, slippage_bps=5), 0.0, 2.0)
    assert fill.status == "FILLED"
    assert fill.price == pytest.approx(199.9)
    assert fill.fee == pytest.approx(0.3998)


def test_no_costs_means_the_open_exactly() -> None:
    fill = fill_at_next_open("BUY", 1.5, 123.25, CostModel(fee_bps=0, slippage_bps=0), 1e6, 0.0)
    assert (fill.price, fill.fee) == (123.25, 0.0)


def test_buy_beyond_cash_is_rejected_with_a_reason() -> None:
    # 1 unit at 100 plus a 10 bps fee costs 100.1: 100.1 cash is enough, 100.09 is not.
    cost = CostModel(fee_bps=10)
    assert fill_at_next_open("BUY", 1.0, 100.0, cost, 100.1, 0.0).status == "FILLED"
    rejected = fill_at_next_open("BUY", 1.0, 100.0, cost, 100.09, 0.0)
    assert (rejected.status, rejected.reason) == ("REJECTED", reasons.INSUFFICIENT_CASH)
    assert (rejected.quantity, rejected.fee) == (0.0, 0.0)


def test_selling_more_than_held_is_rejected() -> None:
    rejected = fill_at_next_open("SELL", 2.0, 100.0, CostModel(), 0.0, 1.0)
    assert (rejected.status, rejected.reason) == ("REJECTED", reasons.INSUFFICIENT_POSITION)


def test_order_ids_are_derived_from_run_and_number() -> None:
    assert order_id_for("bt-abc", 7) == "SIM_bt-abc_000007"
    assert order_id_for("bt-abc", 7) == order_id_for("bt-abc", 7)
    assert order_id_for("bt-abc", 7) != order_id_for("bt-abd", 7)
