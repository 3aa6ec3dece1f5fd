"""The wire codec: the fast market-data encoder writes exactly the model's bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.events import Candle, MarketDataEvent
from streams.codec import DecodeError, decode, encode, encode_market_data
from tests.domain.builders import sample_events
from tests.support.stored_events import stored_v1

prices = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    symbol=st.from_regex(r"[A-Z0-9_]{1,12}", fullmatch=True),
    timestamp=st.integers(min_value=0, max_value=2**53),
    values=st.tuples(prices, prices, prices, prices, st.floats(min_value=0, max_value=1e12)),
    sequence=st.integers(min_value=0, max_value=10**9),
    interval=st.sampled_from(["1m", "30m", "1h", "1d", "750ms"]),
)
def test_fast_market_data_encoding_equals_the_models(
    symbol: str,
    timestamp: int,
    values: tuple[float, float, float, float, float],
    sequence: int,
    interval: str,
) -> None:
    o, h, lo, c, v = values
    candle = Candle(symbol, timestamp, o, h, lo, c, v, interval, 60_000)
    model = MarketDataEvent(
        event_id=f"run-1:market_data:{sequence}",
        run_id="run-1",
        sequence=sequence,
        timestamp=timestamp,
        symbol=symbol,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=v,
        interval=interval,
    )
    fast = encode_market_data("run-1", sequence, candle)
    assert fast == encode(model)
    assert decode(fast) == model


@pytest.mark.parametrize("version", ["null", "[1]", "{}", '"x"', "1.5e400"])
def test_an_unreadable_schema_version_is_a_decode_error(version: str) -> None:
    """Upcasting reads the version before any model checks it: ``null`` once escaped as a
    TypeError (found by tests/property/test_fuzz_codec.py)."""
    wire = encode(sample_events()["alert"]).replace(
        b'"schema_version":1', b'"schema_version":' + version.encode()
    )
    assert wire != encode(sample_events()["alert"])
    with pytest.raises(DecodeError):
        decode(wire)


@pytest.mark.parametrize("name", sorted(stored_v1()))
def test_a_stored_v1_log_decodes_and_encodes_back_byte_for_byte(name: str) -> None:
    wire = stored_v1()[name]
    assert encode(decode(wire)) == wire


def test_an_event_of_a_newer_schema_version_is_a_decode_error() -> None:
    wire = encode(sample_events()["signal"]).replace(b'"schema_version":1', b'"schema_version":7')
    with pytest.raises(DecodeError, match=r"signal v7 is newer than this code reads \(v1\)"):
        decode(wire)
