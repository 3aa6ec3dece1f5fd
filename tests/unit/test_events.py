"""Event models: frozen, strict, the seed's field names on the wire, upcast on read."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from domain.events import (
    EVENT_TYPES,
    Alert,
    MarketDataEvent,
    RiskDecision,
    SimulatedTrade,
    StrategySignal,
    UnknownEventType,
    upcast,
    validate_event,
)
from domain.events.registry import Payload
from streams.codec import encode

ENVELOPE = {"event_id": "r:x:0", "run_id": "r", "sequence": 0, "timestamp": 1_730_443_200_000}


def _wire(event: object) -> dict[str, object]:
    decoded: dict[str, object] = orjson.loads(encode(event))  # type: ignore[arg-type]
    return decoded


def test_wire_format_keeps_the_seed_field_names() -> None:
    md = MarketDataEvent(
        **ENVELOPE,
        symbol="BTC_USDT",
        open=35210.0,
        high=35280.5,
        low=35190.0,
        close=35250.5,
        volume=184.12,
        interval="1m",
    )
    assert _wire(md) == {
        "type": "market_data",
        **ENVELOPE,
        "schema_version": 1,
        "causation_id": None,
        "symbol": "BTC_USDT",
        "open": 35210.0,
        "high": 35280.5,
        "low": 35190.0,
        "close": 35250.5,
        "volume": 184.12,
        "interval": "1m",
    }
    signal = _wire(
        StrategySignal(
            **ENVELOPE,
            symbol="BTC_USDT",
            direction="BUY",
            strength=0.82,
            reason="MOMENTUM_BREAKOUT",
            strategy_id="momentum_v1",
            price=1.0,
        )
    )
    assert {
        "type",
        "symbol",
        "direction",
        "strength",
        "reason",
        "timestamp",
        "strategy_id",
    } <= signal.keys()
    decision = _wire(
        RiskDecision(
            **ENVELOPE,
            symbol="BTC_USDT",
            requested_direction="BUY",
            approved=True,
            approved_size=0.05,
            reason_code="OK",
        )
    )
    assert {
        "type",
        "symbol",
        "requested_direction",
        "approved",
        "approved_size",
        "reason_code",
        "timestamp",
    } <= decision.keys()
    assert decision["type"] == "risk_decision"
    result = _wire(
        SimulatedTrade(
            **ENVELOPE,
            order_id="SIM_1",
            status="FILLED",
            symbol="BTC_USDT",
            side="BUY",
            filled_quantity=0.05,
            price=35260.1,
            fee=1.76,
        )
    )
    assert result["type"] == "order_result"
    assert {"order_id", "status", "symbol", "filled_quantity", "price"} <= result.keys()
    alert = _wire(
        Alert(
            **ENVELOPE,
            level="CRITICAL",
            code="DRAWDOWN_LIMIT_HIT",
            message="Maximaler Drawdown erreicht.",
        )
    )
    assert {"type": "alert", "level": "CRITICAL", "code": "DRAWDOWN_LIMIT_HIT"}.items() <= (
        alert.items()
    )


def test_events_are_frozen_and_strict() -> None:
    alert = Alert(**ENVELOPE, level="INFO", code="X", message="m")
    with pytest.raises(ValidationError):
        alert.code = "Y"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Alert(**ENVELOPE, level="INFO", code="X", message="m", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        StrategySignal(
            **ENVELOPE,
            symbol="S",
            direction="BUY",
            strength=1.5,
            reason="r",
            strategy_id="s",
            price=1.0,
        )


def test_every_event_type_round_trips_through_the_registry() -> None:
    from tests.unit.test_pipeline import run_scripted

    events = run_scripted()
    seen = {e.type for e in events}
    assert {
        "run_metadata",
        "signal",
        "risk_decision",
        "order",
        "order_result",
        "position_state",
        "portfolio_snapshot",
        "risk_state",
        "alert",
        "run_completed",
    } <= seen
    for event in events:
        assert validate_event(orjson.loads(encode(event))) == event
    assert set(EVENT_TYPES) >= seen


def test_old_versions_are_upcast_on_read() -> None:
    def v0_to_v1(payload: Payload) -> Payload:
        payload = dict(payload)
        payload["message"] = payload.pop("text")
        return payload

    old = {
        "type": "alert",
        **ENVELOPE,
        "schema_version": 0,
        "level": "INFO",
        "code": "C",
        "text": "hello",
    }
    lifted = upcast(old, {("alert", 0): v0_to_v1})
    assert lifted["message"] == "hello" and lifted["schema_version"] == 1
    with pytest.raises(ValueError, match="no upcaster for alert v0"):
        upcast(dict(old), {})


def test_unknown_event_types_are_refused() -> None:
    with pytest.raises(UnknownEventType):
        validate_event({"type": "gossip", **ENVELOPE})
