"""What a read-model service reports to, as ports: its health and its metrics.

The process that serves them (``/health``, ``/metrics``) is a runtime concern of
``streams.observability``; ``projections/`` only needs these two small shapes, so it
does not import the runtime.
"""

from __future__ import annotations

from typing import Protocol


class HealthBoard(Protocol):
    """The process's health: each dependency ok or not, with a word on why."""

    def require(self, name: str) -> None:
        """``name`` must be ok for the process to be healthy (not ok until ``set``)."""
        ...

    def set(self, name: str, ok: bool, detail: str = "") -> None: ...


class FoldMetrics(Protocol):
    """Counters and gauges of a projector: events folded, records still to fold."""

    def events_in(self, topic: str, n: int = 1) -> None: ...

    def lag(self, topic: str, partition: int, behind: int) -> None: ...
