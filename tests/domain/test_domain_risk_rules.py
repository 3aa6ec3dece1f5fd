"""Risk Engine, the complete rule set: each new rule at its boundaries (just below, at, just
above its limit), the monitor that keeps the engine's memory, and the configuration."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from domain.risk import (
    CooldownConfig,
    Notice,
    RiskConfig,
    RiskContext,
    RiskEngine,
    RiskMemory,
    RiskMonitor,
    RuleOutcome,
    SizingConfig,
    Verdict,
)
from domain.risk.rules import (
    Cooldown,
    KillSwitch,
    MaxOpenPositions,
    MaxOrderNotional,
    MaxOrderQuantity,
    MinimumOrderQuantity,
    OrderRateLimit,
    ReducingOnly,
    Sizing,
    default_rules,
)
from tests.domain.builders import context, fixed, proposal, risk_config

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
NOW = 10 * DAY  # a decision's candle time, far enough from zero for every window


def ctx_with(
    *,
    timestamp: int = NOW,
    memory: RiskMemory | None = None,
    pending: frozenset[str] = frozenset(),
    **fields: Any,
) -> RiskContext:
    """``builders.context`` plus the decision time, pending entries and the engine memory."""
    return replace(
        context(**fields),
        timestamp=timestamp,
        pending_entries=pending,
        memory=memory or RiskMemory(),
    )


# -- the configuration: default dump pinned, new fields optional -------------------------------

# RiskConfig().model_dump(mode="json") before the complete rule set: it goes into the config
# hash, the run id and the run metadata, so it must never change.
DEFAULT_DUMP: dict[str, Any] = {
    "kill_switch": False,
    "sizing": {
        "mode": "equity_at_risk",
        "quantity": None,
        "risk_pct": 10.0,
        "stop_distance_pct": 100.0,
    },
    "max_symbol_exposure_pct": 50.0,
    "max_total_exposure_pct": 100.0,
    "max_drawdown_pct": 30.0,
    "min_order_notional": 0.0,
}

EVERY_NEW_FIELD: dict[str, Any] = {
    "kill_switch_on_critical": True,
    "cooldown": {
        "after_loss_minutes": 30,
        "global_after_loss_minutes": 5,
        "after_stop_minutes": 120,
    },
    "sizing": {"mode": "fixed_notional", "notional": 250.0},
    "min_order_quantity": 0.001,
    "max_order_quantity": 2.0,
    "max_order_notional": 5_000.0,
    "max_open_positions": 3,
    "drawdown_warning_pct": 15.0,
    "max_daily_drawdown_pct": 5.0,
    "daily_drawdown_warning_pct": 3.0,
    "max_orders_per_minute": 2,
    "max_orders_per_hour": 10,
    "max_orders_per_day": 50,
    "max_consecutive_losses": 4,
}


def test_the_default_dump_is_exactly_what_it_was() -> None:
    dumped = RiskConfig().model_dump(mode="json")
    assert dumped == DEFAULT_DUMP
    assert list(dumped) == list(DEFAULT_DUMP)  # key order too: the metadata keeps it
    assert list(dumped["sizing"]) == list(DEFAULT_DUMP["sizing"])
    assert RiskConfig().model_dump() == DEFAULT_DUMP
    assert RiskConfig().model_dump_json() == (
        '{"kill_switch":false,"sizing":{"mode":"equity_at_risk","quantity":null,'
        '"risk_pct":10.0,"stop_distance_pct":100.0},"max_symbol_exposure_pct":50.0,'
        '"max_total_exposure_pct":100.0,"max_drawdown_pct":30.0,"min_order_notional":0.0}'
    )


def test_new_fields_left_at_their_defaults_are_not_dumped() -> None:
    cfg = RiskConfig(kill_switch_on_critical=False, cooldown=None, max_open_positions=None)
    assert cfg.model_dump(mode="json") == DEFAULT_DUMP


def test_a_config_using_every_new_field_round_trips() -> None:
    cfg = RiskConfig.model_validate(EVERY_NEW_FIELD)
    dumped = cfg.model_dump(mode="json")
    for name, value in EVERY_NEW_FIELD.items():
        if isinstance(value, dict):
            assert {k: dumped[name][k] for k in value} == value, name
        else:
            assert dumped[name] == value, name
    assert RiskConfig.model_validate(dumped) == cfg
    assert RiskConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_a_set_field_is_dumped_even_where_its_value_is_one_of_the_old_ones() -> None:
    dumped = RiskConfig(max_orders_per_day=1).model_dump(mode="json")
    assert dumped == {**DEFAULT_DUMP, "max_orders_per_day": 1}


def test_defaults_of_the_new_fields_switch_nothing_on() -> None:
    cfg = RiskConfig()
    assert cfg.kill_switch_on_critical is False
    assert cfg.cooldown is None
    assert cfg.sizing.notional is None
    for name in EVERY_NEW_FIELD:
        if name not in ("kill_switch_on_critical", "cooldown", "sizing"):
            assert getattr(cfg, name) is None, name
    engine = RiskEngine(cfg)
    assert not (
        engine.watches_day
        or engine.watches_levels
        or engine.watches_exits
        or engine.limits_order_rate
    )


def test_fixed_notional_needs_a_notional() -> None:
    with pytest.raises(ValidationError, match=r"sizing\.notional is required"):
        SizingConfig(mode="fixed_notional")


@pytest.mark.parametrize(
    ("fields", "field_named"),
    [
        ({"min_order_quantity": 0.0}, "min_order_quantity"),
        ({"max_order_quantity": -1.0}, "max_order_quantity"),
        ({"max_order_notional": 0.0}, "max_order_notional"),
        ({"max_order_notional": float("inf")}, "max_order_notional"),
        ({"max_open_positions": 0}, "max_open_positions"),
        ({"max_open_positions": 10_001}, "max_open_positions"),
        ({"drawdown_warning_pct": 0.0}, "drawdown_warning_pct"),
        ({"max_daily_drawdown_pct": 0.0}, "max_daily_drawdown_pct"),
        ({"max_daily_drawdown_pct": 100.5}, "max_daily_drawdown_pct"),
        ({"daily_drawdown_warning_pct": 100.0}, "daily_drawdown_warning_pct"),
        ({"max_orders_per_minute": 0}, "max_orders_per_minute"),
        ({"max_orders_per_hour": 1_000_001}, "max_orders_per_hour"),
        ({"max_orders_per_day": 0}, "max_orders_per_day"),
        ({"max_consecutive_losses": 0}, "max_consecutive_losses"),
        ({"max_consecutive_losses": 1_001}, "max_consecutive_losses"),
        ({"cooldown": {"after_loss_minutes": 0}}, "after_loss_minutes"),
        ({"cooldown": {"after_stop_minutes": 525_601}}, "after_stop_minutes"),
        ({"cooldown": {"global_after_loss_minutes": 1.5}}, "global_after_loss_minutes"),
        ({"cooldown": {"after_win_minutes": 5}}, "after_win_minutes"),
        ({"sizing": {"mode": "fixed_notional", "notional": 0.0}}, "notional"),
        ({"kill_switch_on_critical": "sometimes"}, "kill_switch_on_critical"),
    ],
)
def test_out_of_range_new_fields_are_refused_naming_the_field(
    fields: dict[str, Any], field_named: str
) -> None:
    with pytest.raises(ValidationError, match=field_named):
        RiskConfig.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"max_drawdown_pct": 20.0, "drawdown_warning_pct": 20.0},
            "drawdown_warning_pct must be below max_drawdown_pct",
        ),
        (
            {"drawdown_warning_pct": 31.0},  # the default limit is 30
            "drawdown_warning_pct must be below max_drawdown_pct",
        ),
        (
            {"max_daily_drawdown_pct": 5.0, "daily_drawdown_warning_pct": 5.0},
            "daily_drawdown_warning_pct must be below max_daily_drawdown_pct",
        ),
        (
            {"min_order_quantity": 2.0, "max_order_quantity": 1.0},
            "min_order_quantity must not be above max_order_quantity",
        ),
        (
            {"min_order_notional": 200.0, "max_order_notional": 100.0},
            "min_order_notional must not be above max_order_notional",
        ),
        (
            {"max_orders_per_minute": 11, "max_orders_per_hour": 10},
            "max_orders_per_minute must not be above max_orders_per_hour",
        ),
        (
            {"max_orders_per_hour": 11, "max_orders_per_day": 10},
            "max_orders_per_hour must not be above max_orders_per_day",
        ),
        (
            {"max_orders_per_minute": 11, "max_orders_per_day": 10},
            "max_orders_per_minute must not be above max_orders_per_day",
        ),
    ],
)
def test_inconsistent_settings_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RiskConfig.model_validate(fields)


def test_consistent_settings_at_their_bounds_are_accepted() -> None:
    cfg = RiskConfig(
        max_drawdown_pct=20.0,
        drawdown_warning_pct=19.99,
        max_daily_drawdown_pct=100.0,
        daily_drawdown_warning_pct=99.0,
        min_order_quantity=1.0,
        max_order_quantity=1.0,  # equal: every entry is exactly one unit
        min_order_notional=100.0,
        max_order_notional=100.0,
        max_orders_per_minute=5,
        max_orders_per_hour=5,
        max_orders_per_day=5,
        max_open_positions=10_000,
        max_consecutive_losses=1_000,
        cooldown=CooldownConfig(after_loss_minutes=525_600, after_stop_minutes=1),
    )
    assert cfg.max_order_quantity == cfg.min_order_quantity == 1.0


def test_a_daily_warning_without_a_daily_limit_is_allowed() -> None:
    assert RiskConfig(daily_drawdown_warning_pct=99.0).max_daily_drawdown_pct is None


# -- the chain ---------------------------------------------------------------------------------


def test_the_default_chain_has_no_rule_of_a_setting_left_off() -> None:
    assert [type(r) for r in default_rules(RiskConfig())] == [type(r) for r in default_rules()]
    assert len(RiskEngine(RiskConfig()).rules) == 7


def test_the_full_chain_order() -> None:
    names = [
        type(rule).__name__ for rule in default_rules(RiskConfig.model_validate(EVERY_NEW_FIELD))
    ]
    assert names == [
        "KillSwitch",
        "DrawdownHalt",
        "ReducingOnly",
        "Cooldown",
        "OrderRateLimit",
        "CloseOnlyWhatIsHeld",
        "MaxOpenPositions",
        "Sizing",
        "MaxOrderQuantity",
        "MaxOrderNotional",
        "SymbolExposureLimit",
        "TotalExposureLimit",
        "MinimumOrder",
        "MinimumOrderQuantity",
    ]


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({"max_daily_drawdown_pct": 5.0}, "ReducingOnly"),
        ({"max_consecutive_losses": 3}, "ReducingOnly"),
        ({"cooldown": {"after_loss_minutes": 5}}, "Cooldown"),
        ({"max_orders_per_hour": 5}, "OrderRateLimit"),
        ({"max_open_positions": 2}, "MaxOpenPositions"),
        ({"max_order_quantity": 2.0}, "MaxOrderQuantity"),
        ({"max_order_notional": 2.0}, "MaxOrderNotional"),
        ({"min_order_quantity": 2.0}, "MinimumOrderQuantity"),
    ],
)
def test_each_setting_brings_its_own_rule(fields: dict[str, Any], rule: str) -> None:
    names = [type(r).__name__ for r in default_rules(RiskConfig.model_validate(fields))]
    assert len(names) == 8
    assert rule in names


# -- the automatic kill switch -----------------------------------------------------------------


@pytest.mark.parametrize("side", ["BUY", "SELL"])
def test_a_tripped_kill_switch_rejects_entries_and_exits(side: str) -> None:
    ctx = ctx_with(memory=RiskMemory(kill_switch_tripped=True), positions={"BTC_USD": 1.0})
    assert KillSwitch().check(proposal(side), ctx) == RuleOutcome(None, "KILL_SWITCH_ACTIVE")


def test_an_untripped_kill_switch_passes() -> None:
    p = proposal("BUY")
    assert KillSwitch().check(p, ctx_with()) == RuleOutcome(p)


# -- REDUCING ----------------------------------------------------------------------------------


def test_reducing_refuses_entries() -> None:
    outcome = ReducingOnly().check(proposal("BUY"), ctx_with(state="REDUCING"))
    assert outcome == RuleOutcome(None, "TRADING_REDUCING")


def test_reducing_lets_exits_pass() -> None:
    p = proposal("SELL")
    assert ReducingOnly().check(p, ctx_with(state="REDUCING")) == RuleOutcome(p)


@pytest.mark.parametrize("state", ["ACTIVE", "HALTED"])
def test_reducing_only_ignores_the_other_states(state: str) -> None:
    # HALTED is the drawdown halt's to refuse, with its own code.
    p = proposal("BUY")
    assert ReducingOnly().check(p, ctx_with(state=state)) == RuleOutcome(p)


# -- Cooldown ----------------------------------------------------------------------------------
# A cooldown until NOW: a decision at NOW - 1 is inside it, at NOW and after it is over.


@pytest.mark.parametrize(
    ("memory", "code"),
    [
        (RiskMemory(stop_cooldown_until={"BTC_USD": NOW}), "COOLDOWN_AFTER_STOP"),
        (RiskMemory(loss_cooldown_until={"BTC_USD": NOW}), "COOLDOWN_AFTER_LOSS"),
        (RiskMemory(global_cooldown_until=NOW), "GLOBAL_COOLDOWN"),
    ],
)
@pytest.mark.parametrize(("at", "refused"), [(NOW - 1, True), (NOW, False), (NOW + 1, False)])
def test_cooldown_boundaries(memory: RiskMemory, code: str, at: int, refused: bool) -> None:
    p = proposal("BUY")
    outcome = Cooldown().check(p, ctx_with(timestamp=at, memory=memory))
    assert outcome == (RuleOutcome(None, code) if refused else RuleOutcome(p))


def test_a_symbol_cooldown_leaves_other_symbols_alone_a_global_one_does_not() -> None:
    p = proposal("BUY", symbol="ETH_USD")
    symbol_only = RiskMemory(
        loss_cooldown_until={"BTC_USD": NOW + 1}, stop_cooldown_until={"BTC_USD": NOW + 1}
    )
    assert Cooldown().check(p, ctx_with(memory=symbol_only)) == RuleOutcome(p)
    everywhere = RiskMemory(global_cooldown_until=NOW + 1)
    assert Cooldown().check(p, ctx_with(memory=everywhere)) == RuleOutcome(None, "GLOBAL_COOLDOWN")


def test_the_stop_cooldown_is_reported_before_the_loss_and_global_ones() -> None:
    memory = RiskMemory(
        loss_cooldown_until={"BTC_USD": NOW + 1},
        stop_cooldown_until={"BTC_USD": NOW + 1},
        global_cooldown_until=NOW + 1,
    )
    assert Cooldown().check(proposal("BUY"), ctx_with(memory=memory)).reason_code == (
        "COOLDOWN_AFTER_STOP"
    )
    memory.stop_cooldown_until.clear()
    assert Cooldown().check(proposal("BUY"), ctx_with(memory=memory)).reason_code == (
        "COOLDOWN_AFTER_LOSS"
    )


def test_cooldowns_let_exits_pass() -> None:
    memory = RiskMemory(
        loss_cooldown_until={"BTC_USD": NOW + 1},
        stop_cooldown_until={"BTC_USD": NOW + 1},
        global_cooldown_until=NOW + 1,
    )
    p = proposal("SELL")
    assert Cooldown().check(p, ctx_with(memory=memory)) == RuleOutcome(p)


# -- OrderRateLimit ----------------------------------------------------------------------------


def _orders_inside(window: int, count: int) -> list[int]:
    """``count`` order times inside the trailing window ``(NOW - window, NOW]``."""
    return [NOW - window + 1 + i for i in range(count)]


@pytest.mark.parametrize(
    ("field", "window"),
    [("max_orders_per_minute", MINUTE), ("max_orders_per_hour", HOUR), ("max_orders_per_day", DAY)],
)
@pytest.mark.parametrize(("inside", "refused"), [(2, False), (3, True), (4, True)])
def test_order_rate_boundaries(field: str, window: int, inside: int, refused: bool) -> None:
    # limit 3: two orders in the window leave room for one more; three or four do not
    cfg = RiskConfig.model_validate({field: 3})
    memory = RiskMemory(order_times=_orders_inside(window, inside))
    p = proposal("BUY")
    outcome = OrderRateLimit().check(p, ctx_with(memory=memory, config=cfg))
    assert outcome == (RuleOutcome(None, "ORDER_RATE_LIMIT") if refused else RuleOutcome(p))


@pytest.mark.parametrize(
    ("field", "window"),
    [("max_orders_per_minute", MINUTE), ("max_orders_per_hour", HOUR), ("max_orders_per_day", DAY)],
)
def test_an_order_exactly_one_window_ago_has_left_it(field: str, window: int) -> None:
    cfg = RiskConfig.model_validate({field: 1})
    p = proposal("BUY")
    left = ctx_with(memory=RiskMemory(order_times=[NOW - window]), config=cfg)
    assert OrderRateLimit().check(p, left) == RuleOutcome(p)
    inside = ctx_with(memory=RiskMemory(order_times=[NOW - window + 1]), config=cfg)
    assert OrderRateLimit().check(p, inside) == RuleOutcome(None, "ORDER_RATE_LIMIT")


def test_an_order_at_the_decision_time_counts() -> None:
    cfg = risk_config(max_orders_per_minute=1)
    memory = RiskMemory(order_times=[NOW])
    outcome = OrderRateLimit().check(proposal("BUY"), ctx_with(memory=memory, config=cfg))
    assert outcome == RuleOutcome(None, "ORDER_RATE_LIMIT")


def test_the_rate_limit_lets_exits_pass() -> None:
    cfg = risk_config(max_orders_per_minute=1)
    p = proposal("SELL")
    ctx = ctx_with(memory=RiskMemory(order_times=[NOW, NOW]), config=cfg)
    assert OrderRateLimit().check(p, ctx) == RuleOutcome(p)


def test_record_order_keeps_only_the_longest_window() -> None:
    monitor = RiskMonitor(risk_config(max_orders_per_minute=5, max_orders_per_hour=9))
    memory = RiskMemory()
    for t in (0, HOUR - 1, HOUR, HOUR + 1, 2 * HOUR):
        monitor.record_order(memory, t)
    # at 2 * HOUR the hour is (HOUR, 2 * HOUR]: 0, HOUR - 1 and HOUR have left it
    assert memory.order_times == [HOUR + 1, 2 * HOUR]


# -- MaxOpenPositions --------------------------------------------------------------------------


def _held(count: int) -> dict[str, float]:
    return {f"S{i}": 1.0 for i in range(count)}


@pytest.mark.parametrize(("held", "refused"), [(1, False), (2, True), (3, True)])
def test_max_open_positions_boundaries(held: int, refused: bool) -> None:
    cfg = risk_config(max_open_positions=2)
    p = proposal("BUY", symbol="NEW")
    outcome = MaxOpenPositions().check(p, ctx_with(positions=_held(held), config=cfg))
    assert outcome == (RuleOutcome(None, "MAX_OPEN_POSITIONS") if refused else RuleOutcome(p))


def test_pending_entries_count_as_open_positions() -> None:
    cfg = risk_config(max_open_positions=2)
    ctx = ctx_with(positions=_held(1), pending=frozenset({"P"}), config=cfg)
    assert MaxOpenPositions().check(proposal("BUY", symbol="NEW"), ctx).reason_code == (
        "MAX_OPEN_POSITIONS"
    )


def test_a_held_symbol_pending_and_held_counts_once() -> None:
    cfg = risk_config(max_open_positions=2)
    ctx = ctx_with(positions=_held(1), pending=frozenset({"S0"}), config=cfg)
    p = proposal("BUY", symbol="NEW")
    assert MaxOpenPositions().check(p, ctx) == RuleOutcome(p)


@pytest.mark.parametrize("symbol", ["S0", "P"])
def test_adding_to_a_held_or_pending_symbol_opens_nothing_new(symbol: str) -> None:
    cfg = risk_config(max_open_positions=2)
    ctx = ctx_with(positions=_held(2), pending=frozenset({"P"}), config=cfg)
    p = proposal("BUY", symbol=symbol)
    assert MaxOpenPositions().check(p, ctx) == RuleOutcome(p)


def test_closed_positions_do_not_count() -> None:
    cfg = risk_config(max_open_positions=1)
    ctx = ctx_with(positions={"OLD": 0.0, "GONE": 0.0}, config=cfg)
    p = proposal("BUY", symbol="NEW")
    assert MaxOpenPositions().check(p, ctx) == RuleOutcome(p)


def test_max_open_positions_lets_exits_pass() -> None:
    cfg = risk_config(max_open_positions=1)
    p = proposal("SELL", symbol="S0")
    assert MaxOpenPositions().check(p, ctx_with(positions=_held(3), config=cfg)) == RuleOutcome(p)


# -- fixed_notional sizing ---------------------------------------------------------------------


def test_fixed_notional_sizing_is_the_notional_over_the_price() -> None:
    cfg = risk_config(sizing=SizingConfig(mode="fixed_notional", notional=1_000.0))
    outcome = Sizing().check(proposal("BUY", price=250.0), ctx_with(equity=50.0, config=cfg))
    assert outcome == RuleOutcome(proposal("BUY", price=250.0, quantity=4.0))


def test_fixed_notional_sizing_leaves_exits_alone() -> None:
    cfg = risk_config(sizing=SizingConfig(mode="fixed_notional", notional=1_000.0))
    p = proposal("SELL", quantity=2.5)
    assert Sizing().check(p, ctx_with(config=cfg)) == RuleOutcome(p)


# -- MaxOrderQuantity / MaxOrderNotional -------------------------------------------------------


@pytest.mark.parametrize(("quantity", "resized"), [(1.99, False), (2.0, False), (2.01, True)])
def test_max_order_quantity_boundaries(quantity: float, resized: bool) -> None:
    cfg = risk_config(max_order_quantity=2.0)
    p = proposal("BUY", quantity=quantity)
    outcome = MaxOrderQuantity().check(p, ctx_with(config=cfg))
    expected = RuleOutcome(proposal("BUY", quantity=2.0), "ORDER_SIZE_RESIZED")
    assert outcome == (expected if resized else RuleOutcome(p))


@pytest.mark.parametrize(("quantity", "resized"), [(4.99, False), (5.0, False), (5.01, True)])
def test_max_order_notional_boundaries(quantity: float, resized: bool) -> None:
    # 500 at a price of 100: 5 units
    cfg = risk_config(max_order_notional=500.0)
    p = proposal("BUY", price=100.0, quantity=quantity)
    outcome = MaxOrderNotional().check(p, ctx_with(config=cfg))
    expected = RuleOutcome(proposal("BUY", price=100.0, quantity=5.0), "ORDER_NOTIONAL_RESIZED")
    assert outcome == (expected if resized else RuleOutcome(p))


def test_the_order_maxima_leave_exits_alone() -> None:
    cfg = risk_config(max_order_quantity=1.0, max_order_notional=1.0)
    p = proposal("SELL", quantity=50.0)
    assert MaxOrderQuantity().check(p, ctx_with(config=cfg)) == RuleOutcome(p)
    assert MaxOrderNotional().check(p, ctx_with(config=cfg)) == RuleOutcome(p)


# -- MinimumOrderQuantity ----------------------------------------------------------------------


@pytest.mark.parametrize("side", ["BUY", "SELL"])
@pytest.mark.parametrize(("quantity", "refused"), [(0.49, True), (0.5, False), (0.51, False)])
def test_min_order_quantity_boundaries(side: str, quantity: float, refused: bool) -> None:
    cfg = risk_config(min_order_quantity=0.5)
    p = proposal(side, quantity=quantity)
    outcome = MinimumOrderQuantity().check(p, ctx_with(config=cfg))
    assert outcome == (RuleOutcome(None, "ORDER_QUANTITY_TOO_SMALL") if refused else RuleOutcome(p))


# -- the engine with the new rules -------------------------------------------------------------


def test_decide_a_quantity_cap_then_a_notional_cap_last_resize_wins() -> None:
    # fixed 10 units at 100: quantity cap 6 -> 6 units (600); notional cap 450 -> 4.5 units
    cfg = risk_config(sizing=fixed(10.0), max_order_quantity=6.0, max_order_notional=450.0)
    verdict = RiskEngine(cfg).decide(proposal("BUY", price=100.0), ctx_with(config=cfg))
    assert verdict == Verdict(True, 4.5, "ORDER_NOTIONAL_RESIZED", 10.0)


def test_decide_a_capped_order_below_the_minimum_quantity_is_refused() -> None:
    # 1_000 notional at 100 = 10 units; quantity cap 1.6; notional cap 150 -> 1.5 units,
    # which passes a minimum of 1 and is refused by a minimum of 1.6
    cfg = risk_config(
        sizing=SizingConfig(mode="fixed_notional", notional=1_000.0),
        max_order_notional=150.0,
        min_order_quantity=1.0,
        max_order_quantity=1.6,
    )
    verdict = RiskEngine(cfg).decide(proposal("BUY", price=100.0), ctx_with(config=cfg))
    assert verdict == Verdict(True, 1.5, "ORDER_NOTIONAL_RESIZED", 10.0)
    cfg = cfg.model_copy(update={"min_order_quantity": 1.6})
    verdict = RiskEngine(cfg).decide(proposal("BUY", price=100.0), ctx_with(config=cfg))
    assert verdict == Verdict(False, 0.0, "ORDER_QUANTITY_TOO_SMALL", 10.0)


def test_decide_pre_checks_come_before_the_position_check() -> None:
    cfg = risk_config(max_consecutive_losses=2, cooldown={"after_loss_minutes": 5})
    engine = RiskEngine(cfg)
    assert engine.decide(proposal("BUY"), ctx_with(state="REDUCING", config=cfg)) == Verdict(
        False, 0.0, "TRADING_REDUCING", None
    )
    memory = RiskMemory(global_cooldown_until=NOW + 1)
    verdict = engine.decide(proposal("BUY"), ctx_with(memory=memory, config=cfg))
    assert verdict == Verdict(False, 0.0, "GLOBAL_COOLDOWN", None)


def test_decide_reducing_still_closes_a_position() -> None:
    cfg = risk_config(max_daily_drawdown_pct=5.0)
    ctx = ctx_with(state="REDUCING", positions={"BTC_USD": 2.0}, config=cfg)
    assert RiskEngine(cfg).decide(proposal("SELL"), ctx) == Verdict(True, 2.0, "OK", 2.0)


@pytest.mark.parametrize(
    ("state", "drawdown", "after"),
    [("REDUCING", 29.999, "REDUCING"), ("REDUCING", 30.0, "HALTED"), ("REDUCING", 31.0, "HALTED")],
)
def test_reducing_halts_at_the_drawdown_limit(state: str, drawdown: float, after: str) -> None:
    engine = RiskEngine(risk_config(max_drawdown_pct=30.0))
    assert engine.trading_state_after(state, drawdown) == after  # type: ignore[arg-type]


# -- the monitor: exits ------------------------------------------------------------------------


def _exit(
    monitor: RiskMonitor,
    memory: RiskMemory,
    pnl: float,
    *,
    exit_price: float = 95.0,
    entry_price: float = 100.0,
    at: int = NOW,
    symbol: str = "BTC_USD",
    state: str = "ACTIVE",
) -> list[Notice]:
    return monitor.on_exit(memory, symbol, at, pnl, entry_price, exit_price, state)  # type: ignore[arg-type]


def test_a_losing_exit_starts_the_cooldowns_in_candle_time() -> None:
    cfg = risk_config(cooldown={"after_loss_minutes": 30, "global_after_loss_minutes": 5})
    memory = RiskMemory()
    assert _exit(RiskMonitor(cfg), memory, -0.01) == []
    assert memory.loss_cooldown_until == {"BTC_USD": NOW + 30 * MINUTE}
    assert memory.global_cooldown_until == NOW + 5 * MINUTE
    assert memory.stop_cooldown_until == {}  # not configured


@pytest.mark.parametrize("pnl", [0.0, 0.01])
def test_an_exit_that_does_not_lose_starts_no_cooldown(pnl: float) -> None:
    cfg = risk_config(cooldown={"after_loss_minutes": 30, "global_after_loss_minutes": 5})
    memory = RiskMemory()
    _exit(RiskMonitor(cfg), memory, pnl)
    assert (memory.loss_cooldown_until, memory.global_cooldown_until) == ({}, None)


def test_a_later_loss_never_shortens_a_running_cooldown() -> None:
    cfg = risk_config(cooldown={"after_loss_minutes": 30, "global_after_loss_minutes": 30})
    monitor, memory = RiskMonitor(cfg), RiskMemory()
    _exit(monitor, memory, -1.0, at=NOW)
    _exit(monitor, memory, -1.0, at=NOW + 10 * MINUTE)
    assert memory.loss_cooldown_until == {"BTC_USD": NOW + 40 * MINUTE}
    assert memory.global_cooldown_until == NOW + 40 * MINUTE
    memory.loss_cooldown_until["BTC_USD"] = NOW + DAY  # as if configured longer before
    _exit(monitor, memory, -1.0, at=NOW + 11 * MINUTE)
    assert memory.loss_cooldown_until == {"BTC_USD": NOW + DAY}


# The stop: 10 % below an entry at 100 is 90.
@pytest.mark.parametrize(("exit_price", "stopped"), [(90.01, False), (90.0, True), (89.99, True)])
def test_the_stop_cooldown_needs_the_loss_to_reach_the_stop_distance(
    exit_price: float, stopped: bool
) -> None:
    cfg = risk_config(
        sizing=SizingConfig(risk_pct=1.0, stop_distance_pct=10.0),
        cooldown={"after_stop_minutes": 60},
    )
    memory = RiskMemory()
    _exit(RiskMonitor(cfg), memory, -10.0, exit_price=exit_price)
    assert memory.stop_cooldown_until == ({"BTC_USD": NOW + HOUR} if stopped else {})


@pytest.mark.parametrize(("losses", "hit"), [(2, False), (3, True), (4, True)])
def test_consecutive_losses_boundaries(losses: int, hit: bool) -> None:
    monitor, memory = RiskMonitor(risk_config(max_consecutive_losses=3)), RiskMemory()
    notices = [n for _ in range(losses) for n in _exit(monitor, memory, -1.0)]
    assert memory.losing_streak == losses
    assert memory.losing_streak_hit is hit
    assert [(n.level, n.code, n.moves_state) for n in notices] == (
        [("WARNING", "CONSECUTIVE_LOSSES", True)] if hit else []
    )  # once, however long the streak goes on


@pytest.mark.parametrize("pnl", [0.0, 5.0])
def test_an_exit_that_does_not_lose_breaks_the_row(pnl: float) -> None:
    monitor, memory = RiskMonitor(risk_config(max_consecutive_losses=3)), RiskMemory()
    for result in (-1.0, -1.0, pnl, -1.0, -1.0):
        assert _exit(monitor, memory, result) == []
    assert memory.losing_streak == 2


def test_a_winning_exit_lifts_the_losing_streak() -> None:
    monitor = RiskMonitor(risk_config(max_consecutive_losses=1))
    memory = RiskMemory()
    _exit(monitor, memory, -1.0)
    [notice] = _exit(monitor, memory, 1.0, state="REDUCING")
    assert (notice.level, notice.code, notice.moves_state) == ("INFO", "TRADING_RESUMED", True)
    assert (memory.losing_streak, memory.losing_streak_hit) == (0, False)


def test_a_winning_exit_does_not_resume_while_the_daily_limit_holds() -> None:
    monitor = RiskMonitor(risk_config(max_consecutive_losses=1, max_daily_drawdown_pct=5.0))
    memory = RiskMemory(daily_limit_hit=True)
    _exit(monitor, memory, -1.0, state="REDUCING")
    assert _exit(monitor, memory, 1.0, state="REDUCING") == []
    assert memory.reducing


def test_a_winning_exit_does_not_resume_a_halt() -> None:
    monitor = RiskMonitor(risk_config(max_consecutive_losses=1))
    memory = RiskMemory(losing_streak=1, losing_streak_hit=True)
    assert _exit(monitor, memory, 1.0, state="HALTED") == []
    assert RiskMonitor.trading_state(memory, "HALTED") == "HALTED"


# -- the monitor: a new day --------------------------------------------------------------------


def test_a_new_day_lifts_the_reduction_and_restarts_the_day() -> None:
    monitor = RiskMonitor(risk_config(max_daily_drawdown_pct=5.0, max_consecutive_losses=2))
    memory = RiskMemory(
        daily_limit_hit=True,
        losing_streak=3,
        losing_streak_hit=True,
        daily_drawdown_warned=True,
        day_high_water_mark=1_000.0,
    )
    [notice] = monitor.on_new_day(memory, 940.0, "REDUCING")
    assert (notice.level, notice.code, notice.moves_state) == ("INFO", "TRADING_RESUMED", True)
    assert memory == RiskMemory(day_high_water_mark=940.0)
    assert RiskMonitor.trading_state(memory, "REDUCING") == "ACTIVE"


def test_a_new_day_keeps_a_losing_streak_that_did_not_reach_the_limit() -> None:
    monitor = RiskMonitor(risk_config(max_consecutive_losses=3))
    memory = RiskMemory(losing_streak=2)
    assert monitor.on_new_day(memory, 1_000.0, "ACTIVE") == []
    assert memory.losing_streak == 2  # losses in a row across midnight are still in a row


def test_a_new_day_does_not_resume_a_halt() -> None:
    monitor = RiskMonitor(risk_config(max_daily_drawdown_pct=5.0))
    memory = RiskMemory(daily_limit_hit=True)
    assert monitor.on_new_day(memory, 1_000.0, "HALTED") == []
    assert not memory.daily_limit_hit
    assert RiskMonitor.trading_state(memory, "HALTED") == "HALTED"


# -- the monitor: drawdown levels --------------------------------------------------------------


def _codes(notices: list[Notice]) -> list[str]:
    return [n.code for n in notices]


@pytest.mark.parametrize(("drawdown", "warned"), [(9.99, False), (10.0, True), (10.01, True)])
def test_drawdown_warning_boundaries(drawdown: float, warned: bool) -> None:
    monitor = RiskMonitor(risk_config(drawdown_warning_pct=10.0))
    notices = monitor.watch_levels(RiskMemory(), 1_000.0, drawdown)
    assert _codes(notices) == (["DRAWDOWN_WARNING"] if warned else [])
    assert all((n.level, n.moves_state) == ("WARNING", False) for n in notices)


def test_the_drawdown_warning_gives_way_to_the_limit() -> None:
    # after a fill the halt waits for the next mark: no warning beyond the limit meanwhile
    monitor = RiskMonitor(risk_config(drawdown_warning_pct=10.0, max_drawdown_pct=20.0))
    assert monitor.watch_levels(RiskMemory(), 1_000.0, 20.0) == []
    assert _codes(monitor.watch_levels(RiskMemory(), 1_000.0, 19.99)) == ["DRAWDOWN_WARNING"]


def test_the_drawdown_warning_fires_once_per_crossing_and_re_arms_below() -> None:
    monitor, memory = RiskMonitor(risk_config(drawdown_warning_pct=10.0)), RiskMemory()
    seen = [
        _codes(monitor.watch_levels(memory, 1_000.0, dd))
        for dd in (10.0, 12.0, 10.0, 9.99, 10.5, 11.0)
    ]
    assert seen == [["DRAWDOWN_WARNING"], [], [], [], ["DRAWDOWN_WARNING"], []]


# day high-water mark 1_000; daily limit 10 %: 900 is exactly at it
@pytest.mark.parametrize(("equity", "hit"), [(900.01, False), (900.0, True), (899.99, True)])
def test_daily_drawdown_limit_boundaries(equity: float, hit: bool) -> None:
    monitor = RiskMonitor(risk_config(max_daily_drawdown_pct=10.0))
    memory = RiskMemory(day_high_water_mark=1_000.0)
    notices = monitor.watch_levels(memory, equity, 0.0)
    assert [(n.level, n.code, n.moves_state) for n in notices] == (
        [("CRITICAL", "DAILY_DRAWDOWN_LIMIT_HIT", True)] if hit else []
    )
    assert memory.daily_limit_hit is hit


def test_the_daily_limit_fires_once_a_day() -> None:
    monitor = RiskMonitor(risk_config(max_daily_drawdown_pct=10.0))
    memory = RiskMemory(day_high_water_mark=1_000.0)
    seen = [_codes(monitor.watch_levels(memory, e, 0.0)) for e in (900.0, 880.0, 990.0, 850.0)]
    assert seen == [["DAILY_DRAWDOWN_LIMIT_HIT"], [], [], []]
    monitor.on_new_day(memory, 850.0, "REDUCING")
    assert _codes(monitor.watch_levels(memory, 765.0, 0.0)) == ["DAILY_DRAWDOWN_LIMIT_HIT"]


def test_the_day_high_water_mark_rises_with_equity() -> None:
    monitor = RiskMonitor(risk_config(max_daily_drawdown_pct=10.0))
    memory = RiskMemory(day_high_water_mark=1_000.0)
    assert monitor.watch_levels(memory, 1_200.0, 0.0) == []
    assert memory.day_high_water_mark == 1_200.0
    assert _codes(monitor.watch_levels(memory, 1_080.0, 0.0)) == ["DAILY_DRAWDOWN_LIMIT_HIT"]


@pytest.mark.parametrize(("equity", "warned"), [(950.01, False), (950.0, True), (949.99, True)])
def test_daily_drawdown_warning_boundaries(equity: float, warned: bool) -> None:
    monitor = RiskMonitor(risk_config(daily_drawdown_warning_pct=5.0))
    memory = RiskMemory(day_high_water_mark=1_000.0)
    notices = monitor.watch_levels(memory, equity, 0.0)
    assert [(n.level, n.code) for n in notices] == (
        [("WARNING", "DAILY_DRAWDOWN_WARNING")] if warned else []
    )


def test_the_daily_warning_fires_once_per_crossing_and_re_arms_below_and_next_day() -> None:
    monitor = RiskMonitor(risk_config(daily_drawdown_warning_pct=5.0, max_daily_drawdown_pct=10.0))
    memory = RiskMemory(day_high_water_mark=1_000.0)
    seen = [_codes(monitor.watch_levels(memory, e, 0.0)) for e in (950.0, 940.0, 960.0, 945.0)]
    assert seen == [["DAILY_DRAWDOWN_WARNING"], [], [], ["DAILY_DRAWDOWN_WARNING"]]
    monitor.on_new_day(memory, 945.0, "ACTIVE")
    assert _codes(monitor.watch_levels(memory, 897.0, 0.0)) == ["DAILY_DRAWDOWN_WARNING"]


def test_crossing_a_limit_and_its_warning_at_once_raises_only_the_limit() -> None:
    monitor = RiskMonitor(risk_config(daily_drawdown_warning_pct=5.0, max_daily_drawdown_pct=10.0))
    memory = RiskMemory(day_high_water_mark=1_000.0)
    assert _codes(monitor.watch_levels(memory, 850.0, 0.0)) == ["DAILY_DRAWDOWN_LIMIT_HIT"]
    assert _codes(monitor.watch_levels(memory, 940.0, 0.0)) == []  # the warning is taken as given


def test_the_total_warning_and_the_daily_limit_in_one_watch_in_that_order() -> None:
    cfg = risk_config(drawdown_warning_pct=10.0, max_daily_drawdown_pct=10.0)
    memory = RiskMemory(day_high_water_mark=1_000.0)
    notices = RiskMonitor(cfg).watch_levels(memory, 880.0, 12.0)
    assert [(n.code, n.moves_state) for n in notices] == [
        ("DRAWDOWN_WARNING", False),
        ("DAILY_DRAWDOWN_LIMIT_HIT", True),
    ]


def test_without_daily_settings_the_day_is_not_watched() -> None:
    memory = RiskMemory(day_high_water_mark=1_000.0)
    assert RiskMonitor(risk_config(drawdown_warning_pct=5.0)).watch_levels(memory, 1.0, 0.0) == []
    assert memory.day_high_water_mark == 1_000.0


# -- trading states ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory", "current", "state"),
    [
        (RiskMemory(), "ACTIVE", "ACTIVE"),
        (RiskMemory(daily_limit_hit=True), "ACTIVE", "REDUCING"),
        (RiskMemory(losing_streak_hit=True), "ACTIVE", "REDUCING"),
        (RiskMemory(), "REDUCING", "ACTIVE"),
        (RiskMemory(daily_limit_hit=True), "HALTED", "HALTED"),
        (RiskMemory(), "HALTED", "HALTED"),
    ],
)
def test_trading_state_for(memory: RiskMemory, current: str, state: str) -> None:
    assert RiskMonitor.trading_state(memory, current) == state  # type: ignore[arg-type]
