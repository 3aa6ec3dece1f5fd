"""Execution Simulator: fills at the next open, fees and slippage in bps, rejections."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from domain.execution import CostModel, Fill, fill_at_next_open, order_id_for


def _cost(fee_bps: float = 0.0, slippage_bps: float = 0.0) -> CostModel:
    return CostModel(fee_bps=fee_bps, slippage_bps=slippage_bps)


def test_buy_pays_slippage_above_the_open_and_the_fee_on_the_slipped_notional() -> None:
    # price = 100 * (1 + 5 / 10_000) = 100.05; fee = 2 * 100.05 * 10 / 10_000 = 0.2001
    fill = fill_at_next_open("BUY", 2.0, 100.0, _cost(10.0, 5.0), cash=1_000.0, held=0.0)
    assert fill.status == "FILLED"
    assert fill.reason is None
    assert fill.quantity == 2.0
    assert fill.price == pytest.approx(100.05, rel=1e-12)
    assert fill.fee == pytest.approx(0.2001, rel=1e-12)


def test_sell_gets_slippage_below_the_open_and_pays_the_fee_on_the_slipped_notional() -> None:
    # price = 200 * (1 - 25 / 10_000) = 199.5; fee = 3 * 199.5 * 20 / 10_000 = 1.197
    fill = fill_at_next_open("SELL", 3.0, 200.0, _cost(20.0, 25.0), cash=0.0, held=3.0)
    assert fill.status == "FILLED"
    assert fill.quantity == 3.0
    assert fill.price == pytest.approx(199.5, rel=1e-12)
    assert fill.fee == pytest.approx(1.197, rel=1e-12)


def test_without_costs_the_fill_is_the_open_and_free() -> None:
    assert fill_at_next_open("BUY", 1.5, 80.0, _cost(), cash=120.0, held=0.0) == Fill(
        "FILLED", 1.5, 80.0, 0.0, None
    )


def test_default_cost_model_is_ten_bps_fee_and_no_slippage() -> None:
    # fee = 4 * 50 * 10 / 10_000 = 0.2
    fill = fill_at_next_open("BUY", 4.0, 50.0, CostModel(), cash=1_000.0, held=0.0)
    assert fill.price == 50.0
    assert fill.fee == pytest.approx(0.2, rel=1e-12)


def test_buy_that_cash_covers_exactly_with_its_fee_fills() -> None:
    # 10 * 100 = 1_000 notional + 10 * 100 * 10 / 10_000 = 1 fee = 1_001 == cash
    fill = fill_at_next_open("BUY", 10.0, 100.0, _cost(10.0), cash=1_001.0, held=0.0)
    assert fill == Fill("FILLED", 10.0, 100.0, 1.0, None)


def test_buy_the_fee_pushes_over_the_cash_is_rejected() -> None:
    # the notional 1_000 fits into 1_000.5, the 1.0 fee does not: 1_001 > 1_000.5
    fill = fill_at_next_open("BUY", 10.0, 100.0, _cost(10.0), cash=1_000.5, held=0.0)
    assert fill == Fill("REJECTED", 0.0, 100.0, 0.0, "INSUFFICIENT_CASH")


def test_buy_the_slippage_pushes_over_the_cash_is_rejected() -> None:
    # 10 * 100 * (1 + 10 / 10_000) = 1_001 > 1_000.99, no fee
    fill = fill_at_next_open("BUY", 10.0, 100.0, _cost(0.0, 10.0), cash=1_000.99, held=0.0)
    assert fill.status == "REJECTED"
    assert fill.reason == "INSUFFICIENT_CASH"
    assert fill.quantity == 0.0
    assert fill.fee == 0.0
    assert fill.price == pytest.approx(100.1, rel=1e-12)


def test_sell_of_more_than_is_held_is_rejected() -> None:
    fill = fill_at_next_open("SELL", 2.0, 100.0, _cost(10.0), cash=0.0, held=1.5)
    assert fill == Fill("REJECTED", 0.0, 100.0, 0.0, "INSUFFICIENT_POSITION")


def test_sell_without_a_position_is_rejected() -> None:
    fill = fill_at_next_open("SELL", 0.1, 100.0, _cost(), cash=1_000.0, held=0.0)
    assert fill.reason == "INSUFFICIENT_POSITION"


def test_sell_needs_no_cash_even_to_pay_its_fee() -> None:
    # fee 1.5 * 100 * 10 / 10_000 = 0.15 comes out of the proceeds
    fill = fill_at_next_open("SELL", 1.5, 100.0, _cost(10.0), cash=0.0, held=1.5)
    assert fill.status == "FILLED"
    assert fill.fee == pytest.approx(0.15, rel=1e-12)


def test_order_ids_are_the_run_and_a_zero_padded_number() -> None:
    assert order_id_for("bt-abc", 7) == "SIM_bt-abc_000007"
    assert order_id_for("bt-abc", 1_234_567) == "SIM_bt-abc_1234567"
    assert order_id_for("bt-abc", 7) == order_id_for("bt-abc", 7)
    assert order_id_for("bt-abc", 7) != order_id_for("bt-abd", 7)


@pytest.mark.parametrize(
    "fields",
    [{"fee_bps": -1.0}, {"fee_bps": 10_001.0}, {"slippage_bps": -0.5}, {"spread_bps": 1.0}],
)
def test_cost_model_refuses_invalid_values(fields: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        CostModel(**fields)
