"""Alerts raised by the Risk Engine and the simulator (topic ``alerts``)."""

from __future__ import annotations

from typing import Literal

from domain.events.envelope import Event

AlertLevel = Literal["INFO", "WARNING", "CRITICAL"]


class Alert(Event):
    type: Literal["alert"] = "alert"
    level: AlertLevel
    code: str
    message: str
    symbol: str | None = None
