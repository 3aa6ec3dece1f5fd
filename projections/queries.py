"""What the command line asks of the read models about one run, in one place.

Read-only, each function on a connection of its own: what it returns is as current as
the projector that filled the tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from projections import tables
from projections.status import rejections_by_reason


@dataclass(frozen=True)
class RaisedAlert:
    level: str | None
    code: str | None
    timestamp: int | None  # the candle time it was raised at (0 in a run without candles)


@dataclass(frozen=True)
class RunSummary:
    """A run's row in ``runs`` (its counts and statistics), its alerts in the order they
    were raised, and its refused signals by reason (``rejections_by_reason``)."""

    run: Mapping[str, Any]
    alerts: list[RaisedAlert]
    refused: dict[str, int]


def run_summary(engine: Engine, run_id: str) -> RunSummary:
    """The run's summary; the run must be in the read models (``NoResultFound`` else)."""
    runs, alerts = tables.runs, tables.alerts
    with engine.connect() as conn:
        run = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().one()
        raised = conn.execute(
            select(alerts.c.level, alerts.c.code, alerts.c.timestamp)
            .where(alerts.c.run_id == run_id)
            .order_by(alerts.c.sequence)
        ).all()
        refused = rejections_by_reason(conn, run_id)
    return RunSummary(
        run=dict(run),
        alerts=[RaisedAlert(a.level, a.code, a.timestamp) for a in raised],
        refused=refused,
    )


def has_run(engine: Engine, run_id: str) -> bool:
    """Whether the ``runs`` table has the run's row."""
    runs = tables.runs.c.run_id
    with engine.connect() as conn:
        return conn.execute(select(runs).where(runs == run_id)).first() is not None


def first_run_ids(engine: Engine, limit: int) -> list[str]:
    """Up to ``limit`` run ids of the read models, in order."""
    runs = tables.runs.c.run_id
    with engine.connect() as conn:
        return [str(r) for r in conn.execute(select(runs).order_by(runs).limit(limit)).scalars()]
