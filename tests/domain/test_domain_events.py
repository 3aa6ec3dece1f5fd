"""Events: frozen, strict, the seed's wire names, the registry and the upcasters."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from domain.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    Event,
    Sequencer,
    StrategySignal,
    UnknownEventType,
    event_id_for,
    interval_ms,
    upcast,
    validate_event,
)
from domain.events.registry import UPCASTERS
from tests.domain.builders import sample_events

SAMPLES = sample_events()
ENVELOPE = ["type", "event_id", "run_id", "sequence", "schema_version", "causation_id", "timestamp"]


def _wire(event: Event) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(event.model_dump_json())
    return decoded


def test_the_samples_cover_every_registered_type() -> None:
    assert sorted(SAMPLES) == sorted(EVENT_TYPES)
    assert sorted(EVENT_TYPES) == [
        "alert",
        "dead_letter",
        "intensity_changed",
        "market_data",
        "market_data_completed",
        "order",
        "order_result",
        "portfolio_snapshot",
        "position_state",
        "risk_decision",
        "risk_state",
        "run_completed",
        "run_metadata",
        "signal",
    ]


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_events_are_frozen(event_type: str) -> None:
    event = SAMPLES[event_type]
    with pytest.raises(ValidationError, match="frozen"):
        event.sequence = 99  # type: ignore[misc]
    assert event.sequence == 0


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_events_refuse_extra_fields(event_type: str) -> None:
    payload = _wire(SAMPLES[event_type]) | {"surprise": 1}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        validate_event(payload)


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_round_trip_through_wire_json(event_type: str) -> None:
    event = SAMPLES[event_type]
    again = validate_event(_wire(event))
    assert type(again) is EVENT_TYPES[event_type]
    assert again == event
    assert again.model_dump_json() == event.model_dump_json()


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_the_envelope_comes_first_on_the_wire(event_type: str) -> None:
    wire = _wire(SAMPLES[event_type])
    assert list(wire)[: len(ENVELOPE)] == ENVELOPE
    assert wire["type"] == event_type
    assert wire["schema_version"] == SCHEMA_VERSION == 1


@pytest.mark.parametrize(
    ("event_type", "payload_fields"),
    [
        ("market_data", ["symbol", "open", "high", "low", "close", "volume", "interval"]),
        ("signal", ["symbol", "direction", "strength", "reason", "strategy_id", "price"]),
        (
            "risk_decision",
            [
                "symbol",
                "requested_direction",
                "approved",
                "approved_size",
                "reason_code",
                "requested_size",
            ],
        ),
        ("order", ["order_id", "symbol", "side", "quantity", "order_type"]),
        (
            "order_result",
            ["order_id", "status", "symbol", "side", "filled_quantity", "price", "fee", "reason"],
        ),
        ("alert", ["level", "code", "message", "symbol"]),
    ],
)
def test_wire_keeps_the_seed_field_names(event_type: str, payload_fields: list[str]) -> None:
    assert list(_wire(SAMPLES[event_type])) == ENVELOPE + payload_fields


def test_market_data_wire_values() -> None:
    wire = _wire(SAMPLES["market_data"])
    assert {k: wire[k] for k in ("type", "symbol", "timestamp", "interval")} == {
        "type": "market_data",
        "symbol": "BTC_USD",
        "timestamp": 1_700_000_000_000,
        "interval": "1m",
    }
    assert [wire[k] for k in ("open", "high", "low", "close", "volume")] == [
        100.0,
        110.0,
        90.0,
        105.0,
        12.5,
    ]


def test_market_data_becomes_a_candle() -> None:
    c = SAMPLES["market_data"].to_candle(60_000)  # type: ignore[attr-defined]
    assert tuple(c) == ("BTC_USD", 1_700_000_000_000, 100.0, 110.0, 90.0, 105.0, 12.5, "1m", 60_000)


def test_signal_strength_is_bounded() -> None:
    payload = _wire(SAMPLES["signal"])
    for bad in (-0.01, 1.01):
        with pytest.raises(ValidationError):
            validate_event(payload | {"strength": bad})
    assert validate_event(payload | {"strength": None}).strength is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("event_type", "field", "value"),
    [
        ("signal", "direction", "LONG"),
        ("order", "side", "HOLD"),
        ("order_result", "status", "PARTIAL"),
        ("alert", "level", "PANIC"),
        ("risk_state", "trading_state", "PAUSED"),
    ],
)
def test_literal_fields_refuse_unknown_values(event_type: str, field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        validate_event(_wire(SAMPLES[event_type]) | {field: value})


def test_a_payload_cannot_change_its_type_literal() -> None:
    payload = _wire(SAMPLES["signal"])
    with pytest.raises(ValidationError):
        StrategySignal.model_validate(payload | {"type": "order"})


# -- registry and upcasting -----------------------------------------------------------------------


@pytest.mark.parametrize("payload", [{"type": "trade_v2", "sequence": 0}, {"sequence": 0}])
def test_unknown_types_are_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(UnknownEventType, match="unknown event type"):
        validate_event(payload)
    assert issubclass(UnknownEventType, ValueError)


def _v0_signal() -> dict[str, Any]:
    """A signal as version 0 wrote it: ``side`` instead of ``direction``, no strength."""
    payload = _wire(SAMPLES["signal"])
    payload["side"] = payload.pop("direction")
    del payload["strength"]
    payload["schema_version"] = 0
    return payload


def _signal_v0_to_v1(payload: dict[str, Any]) -> dict[str, Any]:
    lifted = dict(payload)
    lifted["direction"] = lifted.pop("side")
    lifted["strength"] = None
    return lifted


def test_upcast_lifts_a_v0_payload_with_the_given_upcasters() -> None:
    lifted = upcast(_v0_signal(), {("signal", 0): _signal_v0_to_v1})
    assert lifted["schema_version"] == 1
    assert lifted["direction"] == "BUY"
    assert "side" not in lifted
    event = EVENT_TYPES["signal"].model_validate(lifted)
    assert event == SAMPLES["signal"].model_copy(update={"strength": None})


def test_upcast_without_a_step_for_the_version_fails_loudly() -> None:
    with pytest.raises(ValueError, match="no upcaster for signal v0"):
        upcast(_v0_signal(), {("order", 0): _signal_v0_to_v1})


def test_validate_event_of_an_old_version_without_upcasters_fails_loudly() -> None:
    assert ("signal", 0) not in UPCASTERS
    with pytest.raises(ValueError, match="no upcaster for signal v0"):
        validate_event(_v0_signal())


def test_upcast_leaves_current_payloads_alone() -> None:
    payload = _wire(SAMPLES["order"])
    assert upcast(payload, {("order", 1): lambda p: {}}) == payload
    missing_version = {k: v for k, v in payload.items() if k != "schema_version"}
    assert upcast(dict(missing_version)) == missing_version  # absent means version 1


# -- ids ------------------------------------------------------------------------------------------


def test_event_ids_are_derived_from_run_type_and_sequence() -> None:
    assert event_id_for("bt-1", "signal", 3) == "bt-1:signal:3"


def test_sequencer_hands_out_dense_sequences_per_type() -> None:
    ids = Sequencer("bt-1")
    got = [ids.next_id(t) for t in ["signal", "order", "signal", "signal", "order"]]
    assert got == [
        (0, "bt-1:signal:0"),
        (0, "bt-1:order:0"),
        (1, "bt-1:signal:1"),
        (2, "bt-1:signal:2"),
        (1, "bt-1:order:1"),
    ]


@pytest.mark.parametrize(
    ("name", "ms"),
    [
        ("1ms", 1),
        ("30s", 30_000),
        ("1m", 60_000),
        ("30m", 1_800_000),
        ("4h", 14_400_000),
        ("1d", 86_400_000),
    ],
)
def test_interval_ms(name: str, ms: int) -> None:
    assert interval_ms(name) == ms


@pytest.mark.parametrize("name", ["", "m", "0m", "-1m", "1w", "1.5h", "h1"])
def test_interval_ms_refuses_what_is_not_an_interval(name: str) -> None:
    with pytest.raises(ValueError, match="not an interval"):
        interval_ms(name)
