"""Read-only views of flat events, decoded by msgspec: a tenth of a model's decoding cost.

A projector reads a million events only to copy their fields into rows; it needs their
values, validated, not pydantic models. For every event type whose fields are all plain
(strings, numbers, booleans, None, string literals, with bounds at most) a msgspec struct
with the same fields, defaults and bounds is derived from the model, here, so the two
never drift apart.

The views accept a subset of what the models accept, never more, and events of the
current schema version only: msgspec is strict
(no ``"1"`` for an int, no ``1.0`` for an int, no ``1`` for a bool), forbids unknown fields
as the models do, and checks the same bounds. Whatever it refuses is handed to the models,
which accept it (lax JSON coercion, upcasting of an old schema version) or name the reason.
A test holds the views and the models equal on valid events and on mutated ones.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import msgspec
from pydantic.fields import FieldInfo

from domain.events import EVENT_TYPES, Event
from domain.events.market import cached_interval_ms

_PLAIN = (str, int, float, bool, type(None))
_BOUNDS = {
    annotated_types.Ge: "ge",
    annotated_types.Le: "le",
    annotated_types.Gt: "gt",
    annotated_types.Lt: "lt",
}


def _plain(annotation: Any) -> bool:
    if annotation in _PLAIN:
        return True
    origin = get_origin(annotation)
    if origin is Literal:
        return all(isinstance(arg, str) for arg in get_args(annotation))
    if origin in (Union, types.UnionType):
        return all(_plain(arg) for arg in get_args(annotation))
    return False


def _bounded(annotation: Any, meta: msgspec.Meta) -> Any:
    """``annotation`` with bounds on its values; as in pydantic, None stays allowed."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [
            arg if arg is type(None) else Annotated[arg, meta] for arg in get_args(annotation)
        ]
        return Union[tuple(members)]  # noqa: UP007 (built from a runtime list)
    return Annotated[annotation, meta]


def _field(name: str, info: FieldInfo) -> tuple[str, Any, Any] | None:
    annotation: Any = info.annotation
    if not _plain(annotation) or info.default_factory is not None:
        return None
    bounds: dict[str, Any] = {}
    for constraint in info.metadata:
        key = _BOUNDS.get(type(constraint))
        if key is None:
            return None  # a constraint the view could not check: leave the type to the model
        bounds[key] = getattr(constraint, key)
    if annotation is int or annotation == int | None:
        # Beyond 64 bits the models' JSON path refuses an integer: so must the view.
        bounds = {"ge": -(2**63), "le": 2**63 - 1, **bounds}
    if bounds:
        annotation = _bounded(annotation, msgspec.Meta(**bounds))
    if name == "schema_version":
        # A view is of its type's current version only (the field's default): an older
        # event goes to its model, which upcasts it. Checked while decoding, so a batch
        # needs no second pass.
        annotation = Literal[info.default]
    default = msgspec.NODEFAULT if info.is_required() else info.default
    return name, annotation, default


def _interval_ms(view: Any) -> int:
    return cached_interval_ms(view.interval)


# Read-only properties a model has beside its fields, which its view has too: a
# market_data view is a ``domain.events.market.Bar`` the engine can fold as it is.
_PROPERTIES: Mapping[str, Mapping[str, property]] = {
    "market_data": {"interval_ms": property(_interval_ms)},
}


def view_of(model: type[Event]) -> type[msgspec.Struct] | None:
    """The msgspec twin of ``model``, or None if one of its fields is not plain."""
    decorators = model.__pydantic_decorators__
    if (
        decorators.validators
        or decorators.field_validators
        or decorators.model_validators
        or decorators.root_validators
    ):
        return None  # custom validation only the model can run
    fields = []
    for name, info in model.model_fields.items():
        field = _field(name, info)
        if field is None:
            return None
        fields.append(field)
    name = model.model_fields["type"].default
    return msgspec.defstruct(
        f"{model.__name__}View",
        [field for field in fields if field[0] != "type"],
        kw_only=True,
        frozen=True,
        forbid_unknown_fields=True,
        # The wire's "type" selects the view (and must match it); ``view.type`` reads it.
        tag_field="type",
        tag=name,
        namespace={"type": name, **_PROPERTIES.get(name, {})},
    )


VIEWS: Mapping[str, type[msgspec.Struct]] = {
    name: view for name, model in EVENT_TYPES.items() if (view := view_of(model)) is not None
}
DECODERS: Mapping[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(view) for name, view in VIEWS.items()
}
# Any event with a view, by its "type": for many events decoded in one call.
ANY_VIEW: msgspec.json.Decoder[Any] = msgspec.json.Decoder(Union[tuple(VIEWS.values())])  # noqa: UP007
