"""Every risk rule at its boundaries, and the chain that runs them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from domain.risk import RiskEngine, reasons
from domain.risk.rules import (
    CloseOnlyWhatIsHeld,
    DrawdownHalt,
    KillSwitch,
    MinimumOrder,
    Sizing,
    SymbolExposureLimit,
    TotalExposureLimit,
)
from tests.builders import context, proposal, risk_config


def test_kill_switch_rejects_entries_and_exits() -> None:
    ctx = context(config=risk_config(kill_switch=True))
    for side in ("BUY", "SELL"):
        outcome = KillSwitch().check(proposal(side), ctx)
        assert outcome.proposal is None
        assert outcome.reason_code == reasons.KILL_SWITCH


def test_kill_switch_off_passes_unchanged() -> None:
    p = proposal("BUY", quantity=1.0)
    assert KillSwitch().check(p, context()).proposal is p


def test_drawdown_halt_rejects_entries_only_while_halted() -> None:
    halted = context(state="HALTED")
    assert DrawdownHalt().check(proposal("BUY"), halted).reason_code == reasons.DRAWDOWN_HALT
    assert DrawdownHalt().check(proposal("SELL"), halted).proposal is not None
    assert DrawdownHalt().check(proposal("BUY"), context()).proposal is not None


def test_sell_closes_the_whole_position_and_is_refused_when_flat() -> None:
    held = context(positions={"BTC_USD": 0.25})
    outcome = CloseOnlyWhatIsHeld().check(proposal("SELL"), held)
    assert outcome.proposal is not None and outcome.proposal.quantity == 0.25
    flat = CloseOnlyWhatIsHeld().check(proposal("SELL"), context())
    assert (flat.proposal, flat.reason_code) == (None, reasons.NO_POSITION)


def test_fixed_quantity_sizing() -> None:
    ctx = context(config=risk_config(sizing={"mode": "fixed_quantity", "quantity": 0.5}))
    outcome = Sizing().check(proposal("BUY"), ctx)
    assert outcome.proposal is not None and outcome.proposal.quantity == 0.5


def test_equity_at_risk_sizing_uses_the_stop_distance() -> None:
    # 10,000 equity, 2 % at risk = 200; a 5 % stop at price 100 risks 5 per unit -> 40 units.
    ctx = context(config=risk_config(sizing={"risk_pct": 2.0, "stop_distance_pct": 5.0}))
    outcome = Sizing().check(proposal("BUY", price=100.0), ctx)
    assert outcome.proposal is not None
    assert outcome.proposal.quantity == pytest.approx(40.0)


def test_default_sizing_is_ten_percent_of_equity_as_notional() -> None:
    # 10 % of 10,000 = 1,000 notional at price 250 -> 4 units.
    outcome = Sizing().check(proposal("BUY", price=250.0), context())
    assert outcome.proposal is not None
    assert outcome.proposal.quantity == pytest.approx(4.0)


def test_sizing_refuses_entries_without_equity() -> None:
    outcome = Sizing().check(proposal("BUY"), context(equity=0.0))
    assert outcome.reason_code == reasons.NON_POSITIVE_EQUITY


def test_symbol_exposure_boundaries() -> None:
    # Limit: 50 % of 10,000 = 5,000. Already 3,000 in BTC -> headroom 2,000 at price 100.
    ctx = context(exposure={"BTC_USD": 3_000.0})
    rule = SymbolExposureLimit()
    at_limit = rule.check(proposal("BUY", quantity=20.0), ctx)  # 2,000 notional: exactly fits
    assert at_limit.proposal is not None and at_limit.proposal.quantity == 20.0
    assert at_limit.reason_code is None
    above = rule.check(proposal("BUY", quantity=25.0), ctx)  # 2,500: resized to 20 units
    assert above.proposal is not None and above.proposal.quantity == pytest.approx(20.0)
    assert above.reason_code == reasons.SYMBOL_EXPOSURE_RESIZED
    full = rule.check(proposal("BUY", quantity=1.0), context(exposure={"BTC_USD": 5_000.0}))
    assert (full.proposal, full.reason_code) == (None, reasons.SYMBOL_EXPOSURE_LIMIT)
    other_symbol = rule.check(
        proposal("BUY", quantity=25.0), context(exposure={"ETH_USD": 5_000.0})
    )
    assert other_symbol.proposal is not None and other_symbol.proposal.quantity == 25.0


def test_total_exposure_boundaries() -> None:
    # Limit: 100 % of 10,000. 9,000 across symbols -> 1,000 headroom = 10 units at 100.
    ctx = context(exposure={"ETH_USD": 6_000.0, "SOL_USD": 3_000.0})
    rule = TotalExposureLimit()
    assert rule.check(proposal("BUY", quantity=10.0), ctx).proposal.quantity == 10.0  # type: ignore[union-attr]
    resized = rule.check(proposal("BUY", quantity=11.0), ctx)
    assert resized.proposal is not None and resized.proposal.quantity == pytest.approx(10.0)
    assert resized.reason_code == reasons.TOTAL_EXPOSURE_RESIZED
    full = rule.check(proposal("BUY", quantity=1.0), context(exposure={"ETH_USD": 10_000.0}))
    assert full.reason_code == reasons.TOTAL_EXPOSURE_LIMIT


def test_exposure_limits_never_touch_exits() -> None:
    ctx = context(exposure={"BTC_USD": 50_000.0})
    exit_ = proposal("SELL", quantity=500.0)
    assert SymbolExposureLimit().check(exit_, ctx).proposal is exit_
    assert TotalExposureLimit().check(exit_, ctx).proposal is exit_


def test_minimum_order() -> None:
    ctx = context(config=risk_config(min_order_notional=10.0))
    assert MinimumOrder().check(proposal("BUY", quantity=0.1), ctx).proposal is not None  # 10
    too_small = MinimumOrder().check(proposal("BUY", quantity=0.0999), ctx)  # 9.99
    assert too_small.reason_code == reasons.ORDER_TOO_SMALL
    zero = MinimumOrder().check(proposal("BUY", quantity=0.0), context())
    assert zero.reason_code == reasons.ORDER_TOO_SMALL


def test_chain_first_rejection_wins() -> None:
    engine = RiskEngine(risk_config(kill_switch=True))
    verdict = engine.decide(proposal("BUY"), context(state="HALTED", config=engine.config))
    assert (verdict.approved, verdict.reason_code, verdict.quantity) == (
        False,
        reasons.KILL_SWITCH,
        0.0,
    )


def test_chain_approves_with_ok_and_records_the_requested_size() -> None:
    engine = RiskEngine(risk_config())
    verdict = engine.decide(proposal("BUY", price=100.0), context(config=engine.config))
    assert verdict.approved and verdict.reason_code == reasons.OK
    assert verdict.quantity == pytest.approx(10.0)  # 10 % of 10,000 at 100
    assert verdict.requested_quantity == pytest.approx(10.0)


def test_chain_carries_the_last_resize_reason() -> None:
    # Sizing asks for 60 % of equity; symbol limit 50 % cuts to 50; total 30 % cuts to 30.
    config = risk_config(
        sizing={"risk_pct": 60.0}, max_symbol_exposure_pct=50.0, max_total_exposure_pct=30.0
    )
    engine = RiskEngine(config)
    verdict = engine.decide(proposal("BUY", price=100.0), context(config=config))
    assert verdict.approved
    assert verdict.quantity == pytest.approx(30.0)
    assert verdict.requested_quantity == pytest.approx(60.0)
    assert verdict.reason_code == reasons.TOTAL_EXPOSURE_RESIZED


def test_trading_state_halts_at_the_limit_and_stays_halted() -> None:
    engine = RiskEngine(risk_config(max_drawdown_pct=20.0))
    assert engine.trading_state_after("ACTIVE", 19.999) == "ACTIVE"
    assert engine.trading_state_after("ACTIVE", 20.0) == "HALTED"
    assert engine.trading_state_after("HALTED", 0.0) == "HALTED"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"max_drawdown_pct": 500}, "max_drawdown_pct"),
        ({"max_symbol_exposure_pct": 0}, "max_symbol_exposure_pct"),
        ({"sizing": {"mode": "fixed_quantity"}}, "sizing"),
        ({"sizing": {"risk_pct": -1}}, "risk_pct"),
        ({"unknown_limit": 1}, "unknown_limit"),
    ],
)
def test_invalid_risk_config_is_refused(raw: dict[str, object], field: str) -> None:
    from domain.risk import RiskConfig

    with pytest.raises(ValidationError) as caught:
        RiskConfig.model_validate(raw)
    assert field in str(caught.value)
