"""Versioned data: a class states its version, and the steps from older ones beside it.

The convention (as in eventsourcing's ``class_version``): a class whose stored form is at
version N declares, beside its fields, one static method ``upcast_vK_vK1`` for each step
from an older version K to K + 1, each taking the stored payload (a dict, as decoded from
JSON) at version K and returning it at version K + 1. Reading a payload of version K lifts
it step by step to N, then validates it as the class. A version with no step from it, or
newer than the class, is refused with a reason: nothing is ever read as what it is not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]

_STEP = re.compile(r"upcast_v(\d+)_v(\d+)")


class VersionError(ValueError):
    """A stored payload of a version this code cannot read."""


def declared_upcasters(cls: type, current: int) -> dict[int, Upcaster]:
    """The ``upcast_vK_vK1`` steps ``cls`` declares, by the version K they lift from.

    Raises TypeError for a step that does not go one version up or that goes beyond
    ``current``, and for a gap: from the oldest declared version up to ``current`` every
    step must be there. Checked once, when the class is made.
    """
    steps: dict[int, Upcaster] = {}
    for name in dir(cls):
        match = _STEP.fullmatch(name)
        if match is None:
            continue
        older, newer = int(match.group(1)), int(match.group(2))
        if newer != older + 1 or newer > current:
            raise TypeError(
                f"{cls.__name__}.{name}: a step lifts one version, up to v{current} at most"
            )
        steps[older] = getattr(cls, name)
    if steps and set(steps) != set(range(min(steps), current)):
        missing = sorted(set(range(min(steps), current)) - set(steps))
        raise TypeError(f"{cls.__name__} lacks upcast_v{missing[0]}_v{missing[0] + 1}")
    return steps


def lift(
    payload: Payload,
    version: Any,
    current: int,
    steps: Mapping[int, Upcaster],
    what: str,
    key: str,
) -> Payload:
    """``payload`` (of ``version``) lifted to ``current`` through ``steps``; the version
    is written under ``key`` after each step. ``what`` names the payload in errors."""
    if type(version) is not int:
        raise VersionError(f"{what} has {key.replace('_', ' ')} {version!r}, not an integer")
    if version > current:
        raise VersionError(f"{what} v{version} is newer than this code reads (v{current})")
    while version < current:
        step = steps.get(version)
        if step is None:
            raise VersionError(f"no upcaster for {what} v{version}")
        payload = step(payload)
        version += 1
        payload[key] = version
    return payload
