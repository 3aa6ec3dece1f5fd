"""The base of the state values an engine snapshot is made of.

Each stateful part of the engine (a strategy's indicators, the portfolio, the statistics,
the adaptive intensity, ...) gives its state as one of these: frozen plain data (numbers,
strings, lists, dicts), typed, refusing unknown fields, and rebuilt from it by the part
itself. Floats are written as the shortest text that reads back as the same float, and
the few that are not finite as JSON's ``Infinity`` and ``NaN`` constants, never null, so a
state read back is the state written, bit for bit.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StateModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")
