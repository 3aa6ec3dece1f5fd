"""Event views (msgspec) accept a subset of what the models accept, with the same values."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.events import EVENT_TYPES, SCHEMA_VERSION, Event
from streams.codec import DecodeError, decode, decode_view, decode_views, encode
from streams.event_views import DECODERS, VIEWS
from tests.domain.builders import sample_events
from tests.support.stored_events import stored_v1

SAMPLES = sample_events()
WITH_VIEWS = sorted(VIEWS)


def fields_of(event: Any) -> dict[str, Any]:
    if isinstance(event, Event):
        return event.model_dump()
    return {"type": event.type, **msgspec.structs.asdict(event)}


def test_every_flat_event_type_has_a_view() -> None:
    # Run metadata and completion carry nested models: they are decoded by the models.
    assert set(WITH_VIEWS) == set(EVENT_TYPES) - {"run_metadata", "run_completed"}


@pytest.mark.parametrize("name", WITH_VIEWS)
def test_a_view_holds_the_models_values(name: str) -> None:
    wire = encode(SAMPLES[name])
    view = decode_view(wire)
    assert not isinstance(view, Event)
    assert view.type == name
    assert fields_of(view) == fields_of(decode(wire))


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from(["", "1", "1.5", "true", "BUY", "SELL", "FILLED", "WARNING", "x" * 5]),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=600, deadline=None)
@given(
    name=st.sampled_from(WITH_VIEWS),
    changes=st.lists(
        st.tuples(st.sampled_from(["set", "drop", "add"]), st.integers(0, 40), json_values),
        min_size=1,
        max_size=3,
    ),
)
def test_whatever_a_view_accepts_the_model_accepts_with_the_same_values(
    name: str, changes: list[tuple[str, int, Any]]
) -> None:
    payload = SAMPLES[name].model_dump(mode="json")
    keys = [key for key in payload if key != "type"]
    for action, index, value in changes:
        key = keys[index % len(keys)]
        if action == "set":
            payload[key] = value
        elif action == "drop":
            payload.pop(key, None)
        else:
            payload[f"extra_{index}"] = value
    wire = json.dumps(payload).encode()  # orjson refuses integers beyond 64 bits
    try:
        view = DECODERS[name].decode(wire)
    except msgspec.DecodeError:
        return  # the models decide; decode_view hands such values to them
    # A view takes its type's current version only: an older one is the model's to upcast.
    assert view.schema_version == EVENT_TYPES[name].current_version
    assert fields_of(view) == fields_of(decode(wire))


@pytest.mark.parametrize(
    "wire",
    [
        b'{"type":"signal","run_id":"r"}',  # fields missing
        b'{"type":"alert","event_id":"e","run_id":"r","sequence":0,"timestamp":0,'
        b'"level":"LOUD","code":"X","message":"m"}',  # not a level
        b"not json",
    ],
)
def test_what_no_model_accepts_is_a_decode_error(wire: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_view(wire)


def test_lax_values_are_left_to_the_models() -> None:
    payload = SAMPLES["signal"].model_dump(mode="json")
    payload["sequence"] = 7.0  # an int as a float: the model coerces, the view refuses
    event = decode_view(orjson.dumps(payload))
    assert isinstance(event, Event) and event.sequence == 7


def test_many_events_decode_in_one_call_as_one_by_one() -> None:
    wires = [encode(SAMPLES[name]) for name in WITH_VIEWS] * 3
    views = decode_views(wires)
    assert views is not None
    assert [fields_of(v) for v in views] == [fields_of(decode_view(w)) for w in wires]


@pytest.mark.parametrize(
    "odd_one",
    [
        b"not json",
        b"",  # would vanish as a blank line
        b'{"type":"alert",\n"run_id":"r"}',  # would span two lines
        orjson.dumps({**SAMPLES["alert"].model_dump(mode="json"), "schema_version": 0}),
        encode(SAMPLES["run_completed"]),  # no view
    ],
)
def test_a_batch_with_one_odd_value_is_left_to_one_by_one_decoding(odd_one: bytes) -> None:
    wires = [encode(SAMPLES["signal"]), odd_one, encode(SAMPLES["alert"])]
    assert decode_views(wires) is None


def test_an_event_of_an_older_schema_version_is_left_to_its_model() -> None:
    payload = {**SAMPLES["signal"].model_dump(mode="json"), "schema_version": SCHEMA_VERSION - 1}
    with pytest.raises(msgspec.ValidationError):
        DECODERS["signal"].decode(orjson.dumps(payload))
    # The model's path upcasts it, or (no upcaster for that version) names the reason.
    with pytest.raises(DecodeError, match="no upcaster for signal"):
        decode_view(orjson.dumps(payload))


def test_an_event_of_a_newer_schema_version_is_refused_by_both() -> None:
    payload = {**SAMPLES["alert"].model_dump(mode="json"), "schema_version": 2}
    with pytest.raises(msgspec.ValidationError):
        DECODERS["alert"].decode(orjson.dumps(payload))
    with pytest.raises(DecodeError, match=r"alert v2 is newer than this code reads \(v1\)"):
        decode_view(orjson.dumps(payload))


def test_a_stored_v1_log_reads_through_the_views_as_through_the_models() -> None:
    wires = [wire for name, wire in sorted(stored_v1().items()) if name in VIEWS]
    views = decode_views(wires)
    assert views is not None and len(views) == len(WITH_VIEWS)
    assert [fields_of(v) for v in views] == [fields_of(decode(w)) for w in wires]


def test_a_view_takes_its_own_types_version_and_no_other() -> None:
    # A type at version 2 while the others stay at 1: its view must accept 2 (and leave
    # 1 to the model, which upcasts it), not whatever version the other types are at.
    from pydantic import create_model

    from domain.events import StrategySignal
    from streams.event_views import view_of

    signal_v2 = create_model("StrategySignalV2", __base__=StrategySignal, schema_version=(int, 2))
    view = view_of(signal_v2)
    assert view is not None
    payload = orjson.loads(encode(sample_events()["signal"]))
    as_v2 = orjson.dumps({**payload, "schema_version": 2})
    assert msgspec.json.decode(as_v2, type=view).schema_version == 2
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(orjson.dumps({**payload, "schema_version": 1}), type=view)
