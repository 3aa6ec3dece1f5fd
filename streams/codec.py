"""JSON on the wire: the seed's field names plus the envelope, keys in model order.

The canonical encoding of an event is ``orjson.dumps(event.model_dump(mode="json"))``.
Market data, the one event that flows a million times a run, has a direct encoder that
produces the same bytes without building a model (a test holds the two equal).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import orjson

from domain.events import (
    EVENT_TYPES,
    Candle,
    Event,
    MarketDataEvent,
    event_id_for,
    validate_event,
)
from domain.execution import order_id_for
from streams.event_views import ANY_VIEW, DECODERS


class DecodeError(ValueError):
    pass


_MARKET_DATA_VERSION = MarketDataEvent.current_version


def encode(event: Event) -> bytes:
    return orjson.dumps(event.model_dump(mode="json"))


def encode_market_data(run_id: str, sequence: int, candle: Candle) -> bytes:
    return encode_candle_fields(run_id, sequence, *candle[:8])


def encode_candle_fields(
    run_id: str,
    sequence: int,
    symbol: str,
    timestamp: int,
    open_: float,
    high: float,
    low: float,
    close: float,
    volume: float,
    interval: str,
) -> bytes:
    """The ``market_data`` event of one candle, given as plain fields."""
    return orjson.dumps(
        {
            "type": "market_data",
            "event_id": event_id_for(run_id, "market_data", sequence),
            "run_id": run_id,
            "sequence": sequence,
            "schema_version": _MARKET_DATA_VERSION,
            "causation_id": None,
            "timestamp": timestamp,
            "symbol": symbol,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "interval": interval,
        }
    )


def decode_json(value: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise DecodeError("not a JSON object")
    return payload


# Events this codec wrote start with their type; naming it up front lets pydantic parse and
# validate the bytes in one pass, without building a dict first.
_TYPE_FIRST = re.compile(rb'\{"type":"([a-z_]{1,40})"')


_VIEW_DECODERS = {name.encode(): decoder for name, decoder in DECODERS.items()}


def decode_view(value: bytes) -> Any:
    """The event in ``value``, validated, as a read-only view where one exists (see
    ``streams.event_views``; same fields, a tenth of the cost) and as its model otherwise.
    For readers that only read fields, such as projectors."""
    if value.startswith(b'{"type":"'):
        decoder = _VIEW_DECODERS.get(value[9 : value.find(b'"', 9)])
        if decoder is not None:
            try:
                return decoder.decode(value)
            except msgspec.DecodeError:  # its ValidationError included
                pass  # the models decide: lax coercion, upcasting, or the reason it is bad
    return decode(value)


def decode_views(values: Sequence[bytes]) -> list[Any] | None:
    """``decode_view`` of every value, in one call: None unless every value is an event
    with a view, of its type's current schema version (then decode them one by one)."""
    joined = b"\n".join(values)
    # One line per value: no value is empty (blank lines are skipped) or spans lines.
    if b"" in values or joined.count(b"\n") != len(values) - 1:
        return None
    try:
        views: list[Any] = ANY_VIEW.decode_lines(joined)
    except msgspec.DecodeError:
        return None
    return views if len(views) == len(values) else None


def decode(value: bytes) -> Event:
    """Decode and validate one event, upcasting old schema versions of its type (a newer
    one than this code reads is a DecodeError)."""
    head = _TYPE_FIRST.match(value)
    if head is not None:
        cls = EVENT_TYPES.get(head.group(1).decode())
        if cls is not None:
            try:
                event = cls.__pydantic_validator__.validate_json(value)
            except ValueError:
                pass  # the general path below names the reason, or upcasts an old version
            else:
                if event.schema_version == cls.current_version:
                    return event  # type: ignore[no-any-return]
    payload = decode_json(value)
    try:
        return validate_event(payload)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    except (TypeError, LookupError) as exc:
        # Upcasting reads fields before any model checks them: "schema_version": null, a
        # field of the wrong type or a missing one fails there, and is bad input all the same.
        raise DecodeError(f"cannot upcast this event: {exc}") from None


def relabeller(run_from: str, run_to: str) -> Callable[[bytes], bytes]:
    """Canonical event bytes of run ``run_from`` as run ``run_to`` would have written them:
    its id where it stands as the run, as the head of an event id and inside an order id.
    Works on one event or on many joined by newlines alike."""
    pairs = [
        (f'"run_id":"{run_from}"', f'"run_id":"{run_to}"'),
        (f'"{run_from}:', f'"{run_to}:'),
        (f'"{order_id_for(run_from, 0)[:-6]}', f'"{order_id_for(run_to, 0)[:-6]}'),
    ]
    encoded = [(old.encode(), new.encode()) for old, new in pairs]

    def relabel(raw: bytes) -> bytes:
        for old, new in encoded:
            raw = raw.replace(old, new)
        return raw

    return relabel
