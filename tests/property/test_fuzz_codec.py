"""Fuzzing the event decoder: whatever bytes a log or a broker hands over, ``decode``,
``decode_json``, ``decode_view`` and ``decode_views`` give an event (or None for
``decode_views``) or raise ``DecodeError``, never another exception.

Inputs are the canonical bytes of every event type, mutated at the byte level (flips,
cuts, insertions, truncation) and at the JSON level (a field set to any JSON value,
dropped, added, the schema version changed), and random bytes.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from domain.events import Event
from streams.codec import DecodeError, decode, decode_json, decode_view, decode_views, encode
from tests.domain.builders import sample_events
from tests.support.fuzzing import fuzz_settings

WIRES = {name: encode(e) for name, e in sample_events().items()}
NAMES = sorted(WIRES)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.sampled_from(["", "1", "BUY", "FILLED", "market_data", "1m", "0m", "x" * 300])
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def json_mutants(draw: st.DrawFn) -> bytes:
    payload: dict[str, Any] = json.loads(WIRES[draw(st.sampled_from(NAMES))])
    for _ in range(draw(st.integers(1, 3))):
        keys = sorted(payload) or ["type"]
        key = draw(st.sampled_from([*keys, "schema_version", "type", "extra"]))
        action = draw(st.sampled_from(["set", "set", "drop", "type"]))
        if action == "set":
            payload[key] = draw(json_values)
        elif action == "drop":
            payload.pop(key, None)
        else:  # another event's type on these fields
            payload["type"] = draw(st.sampled_from(NAMES))
    return json.dumps(payload, allow_nan=True).encode()  # NaN and big ints as well


@st.composite
def byte_mutants(draw: st.DrawFn) -> bytes:
    wire = WIRES[draw(st.sampled_from(NAMES))]
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(wire)))
        action = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if action == "flip" and at < len(wire):
            wire = wire[:at] + bytes([wire[at] ^ draw(st.integers(1, 255))]) + wire[at + 1 :]
        elif action == "cut":
            wire = wire[:at] + wire[at + draw(st.integers(1, 10)) :]
        elif action == "insert":
            wire = wire[:at] + draw(st.binary(min_size=1, max_size=6)) + wire[at:]
        else:
            wire = wire[:at]
    return wire


event_bytes = (
    json_mutants() | byte_mutants() | st.binary(max_size=80) | st.sampled_from(list(WIRES.values()))
)


@fuzz_settings(1_500)
@given(values=st.lists(event_bytes, min_size=1, max_size=4))
def test_event_bytes_decode_to_an_event_or_a_decode_error(values: list[bytes]) -> None:
    for value in values:
        try:
            decoded = decode(value)
        except DecodeError:
            event("decode: DecodeError")
            decoded = None
        else:
            assert isinstance(decoded, Event)
            event("decode: an event")
        with contextlib.suppress(DecodeError):
            assert isinstance(decode_json(value), dict)
        try:
            view = decode_view(value)
        except DecodeError:
            assert decoded is None  # the view falls back to the models: the same refusal
        else:
            assert decoded is not None  # views accept a subset of what the models accept
            assert view.type == decoded.type
    many = decode_views(values)
    assert many is None or len(many) == len(values)
