"""Adaptive intensity (R12): the risk parameters in force, each change one event (topic
``portfolio``, with the rest of the risk state).

The Risk Engine reads these events in log order, so a replay applies the same parameters
to the same signals: decisions stay reproducible. ``score`` is the quantised score the
parameters were interpolated from (``domain.intensity``), ``trades`` the closed trades in
the window it was computed over.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from domain.events.envelope import Event


class IntensityChanged(Event):
    type: Literal["intensity_changed"] = "intensity_changed"
    score: float = Field(ge=0.0, le=1.0)
    risk_pct: float = Field(gt=0.0, le=100.0)
    max_total_exposure_pct: float = Field(gt=0.0)
    max_symbol_exposure_pct: float = Field(gt=0.0)
    cooldown_minutes: float = Field(ge=0.0)
    trades: int = Field(ge=0)
    reason: str
