"""Per-event-type versions: each class states its version and the steps from older ones
beside its fields; a stored log (``tests.support.stored_events``) is read through them."""

from __future__ import annotations

from typing import Any, Literal

import orjson
import pytest

from domain.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    Event,
    EventRegistry,
    Sequencer,
    StrategySignal,
    validate_event,
)
from domain.events.signals import Direction
from domain.versions import VersionError, declared_upcasters, lift
from tests.support.stored_events import stored_v1


def _payload(event_type: str) -> dict[str, Any]:
    payload: dict[str, Any] = orjson.loads(stored_v1()[event_type])
    return payload


def test_every_type_states_its_version_and_writes_it() -> None:
    for name, cls in EVENT_TYPES.items():
        assert cls.event_type == name
        # All are at their first version: the wire has held 1 for every type since the
        # first log, and a version moves only with a change of that type's shape.
        assert cls.current_version == SCHEMA_VERSION == 1
        assert cls.model_fields["schema_version"].default == cls.current_version
        assert cls.upcasters == {}


def test_the_stored_log_has_one_event_of_every_type_at_version_1() -> None:
    stored = stored_v1()
    assert sorted(stored) == sorted(EVENT_TYPES)
    assert {orjson.loads(line)["schema_version"] for line in stored.values()} == {1}


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_the_stored_v1_events_read_and_write_back_byte_for_byte(event_type: str) -> None:
    line = stored_v1()[event_type]
    event = validate_event(orjson.loads(line))
    assert type(event) is EVENT_TYPES[event_type]
    assert orjson.dumps(event.model_dump(mode="json")) == line


class _SignalV2(Event):
    """What a second version of ``signal`` could be: a list of reasons instead of one.
    Declared here, as a future version would be beside its class."""

    type: Literal["signal"] = "signal"
    schema_version: int = 2
    symbol: str
    direction: Direction
    strength: float | None = None
    reasons: tuple[str, ...]
    strategy_id: str
    price: float

    @staticmethod
    def upcast_v1_v2(payload: dict[str, Any]) -> dict[str, Any]:
        payload["reasons"] = [payload.pop("reason")]
        return payload


def _with_signal_v2() -> EventRegistry:
    others = [cls for name, cls in EVENT_TYPES.items() if name != "signal"]
    return EventRegistry([*others, _SignalV2])


def test_a_class_finds_its_steps_beside_its_fields() -> None:
    assert _SignalV2.current_version == 2
    assert _SignalV2.upcasters == {1: _SignalV2.upcast_v1_v2}
    # The redeclared version keeps its place in the envelope, on the wire.
    assert list(_SignalV2.model_fields)[:7] == list(Event.model_fields)
    assert _with_signal_v2().upcasters == {("signal", 1): _SignalV2.upcast_v1_v2}


def test_a_stored_v1_signal_is_read_as_v2_through_its_upcaster() -> None:
    stored = _payload("signal")
    event = _with_signal_v2().validate(_payload("signal"))
    assert isinstance(event, _SignalV2)
    assert event.schema_version == 2
    assert event.reasons == (stored["reason"],)
    v1 = StrategySignal.model_validate(stored)
    kept = set(StrategySignal.model_fields) - {"reason", "schema_version"}
    assert {k: getattr(event, k) for k in kept} == {k: getattr(v1, k) for k in kept}


def test_the_v2_registry_reads_what_it_writes_and_the_other_types_asstored_v1() -> None:
    registry = _with_signal_v2()
    event = registry.validate(_payload("signal"))
    assert registry.validate(event.model_dump(mode="json")) == event
    order = registry.validate(_payload("order"))
    assert order == validate_event(_payload("order"))


def test_a_version_newer_than_the_code_is_refused() -> None:
    v2 = _with_signal_v2().validate(_payload("signal")).model_dump(mode="json")
    with pytest.raises(VersionError, match=r"signal v2 is newer than this code reads \(v1\)"):
        validate_event(v2)


def test_the_envelope_helper_fills_what_next_id_gives() -> None:
    ids, twin = Sequencer("bt-1"), Sequencer("bt-1")
    twin.next_id("signal")
    made = ids.new_event(
        StrategySignal,
        7,
        "bt-1:market_data:3",
        symbol="BTC",
        direction="BUY",
        reason="R",
        strategy_id="s",
        price=1.0,
    )
    again = ids.new_event(
        StrategySignal, 8, None, symbol="BTC", direction="BUY", reason="R", strategy_id="s", price=1
    )
    assert (made.event_id, made.run_id, made.sequence) == ("bt-1:signal:0", "bt-1", 0)
    assert (made.causation_id, made.timestamp) == ("bt-1:market_data:3", 7)
    assert (again.sequence, again.price, again.causation_id) == (1, 1.0, None)  # validated
    assert ids.positions() == twin.positions() | {"signal": 2}
    with pytest.raises(ValueError, match="direction"):
        ids.new_event(
            StrategySignal,
            9,
            None,
            symbol="B",
            direction="UP",
            reason="R",
            strategy_id="s",
            price=1,
        )


# -- the convention, for any versioned class ----------------------------------------------------


def test_steps_must_lift_one_version_up_to_the_current_one() -> None:
    class Skips:
        @staticmethod
        def upcast_v1_v3(payload: dict[str, Any]) -> dict[str, Any]:
            return payload

    class Gap:
        @staticmethod
        def upcast_v1_v2(payload: dict[str, Any]) -> dict[str, Any]:
            return payload

    with pytest.raises(TypeError, match="one version"):
        declared_upcasters(Skips, 3)
    with pytest.raises(TypeError, match="lacks upcast_v2_v3"):
        declared_upcasters(Gap, 3)
    with pytest.raises(TypeError, match="up to v1 at most"):
        declared_upcasters(Gap, 1)
    assert declared_upcasters(Gap, 2) == {1: Gap.upcast_v1_v2}


def test_an_event_class_with_a_gap_in_its_steps_is_refused_when_it_is_made() -> None:
    with pytest.raises(TypeError, match="lacks upcast_v2_v3"):

        class _Broken(Event):
            type: Literal["broken"] = "broken"
            schema_version: int = 3

            @staticmethod
            def upcast_v1_v2(payload: dict[str, Any]) -> dict[str, Any]:
                return payload


@pytest.mark.parametrize("version", [None, "1", 1.0, True, [1]])
def test_a_version_that_is_not_an_integer_is_refused(version: Any) -> None:
    with pytest.raises(VersionError, match="not an integer"):
        lift({"v": version}, version, 1, {}, "thing", "v")


def test_lifting_writes_each_step_s_version() -> None:
    seen: list[int] = []

    def step(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(payload["v"])
        return payload

    assert lift({"v": 0}, 0, 3, {0: step, 1: step, 2: step}, "thing", "v") == {"v": 3}
    assert seen == [0, 1, 2]
