"""A run's standing as the read models show it: what ``cdb status`` prints.

Everything here is read from the projections, so it is as current as the projector is;
``lag`` says how far behind the log that is. Equity is marked to the last projected
candle of each open position's symbol: the portfolio snapshots in ``equity_curve`` come
with fills and once a day, a live run's prices move in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from projections import tables
from projections.projector import SOURCE_TOPICS, checkpoints_of, projector_name
from streams.log_port import EventLog


class NoSuchRun(LookupError):
    pass


def latest_run_id(conn: Connection) -> str | None:
    """The run whose latest projected candle is the newest (the live one, if any)."""
    row = conn.execute(
        select(tables.runs.c.run_id)
        .order_by(tables.runs.c.status == "COMPLETED", tables.runs.c.started_at.desc())
        .limit(1)
    ).first()
    return None if row is None else str(row[0])


def rejections_by_reason(conn: Connection, run_id: str) -> dict[str, int]:
    """How many of the run's signals were refused, by reason code, most frequent first.

    A refusal is either a rejected risk decision (its ``reason_code``: the Risk Engine's
    rules, ``NO_POSITION_TO_CLOSE`` for a SELL while flat) or an approved order the
    simulator could not fill (its ``reason``: ``INSUFFICIENT_CASH``, ``NO_NEXT_CANDLE``,
    ...). The counts add up to the run's ``rejected``.
    """
    decisions, orders = tables.risk_decisions, tables.orders
    counts: dict[str, int] = {}
    for reason, count in conn.execute(
        select(decisions.c.reason_code, func.count())
        .where(decisions.c.run_id == run_id, decisions.c.approved.is_(False))
        .group_by(decisions.c.reason_code)
    ):
        counts[str(reason)] = counts.get(str(reason), 0) + int(count)
    for reason, count in conn.execute(
        select(orders.c.reason, func.count())
        .where(orders.c.run_id == run_id, orders.c.status == "REJECTED")
        .group_by(orders.c.reason)
    ):
        counts[str(reason)] = counts.get(str(reason), 0) + int(count)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def last_closes(conn: Connection, run_id: str, symbols: list[str]) -> dict[str, float]:
    """The last projected close of each of ``symbols`` in the run (those with candles)."""
    candles = tables.candles
    closes: dict[str, float] = {}
    for symbol in symbols:
        close = conn.execute(
            select(candles.c.close)
            .where(candles.c.run_id == run_id, candles.c.symbol == symbol)
            .order_by(candles.c.timestamp.desc())
            .limit(1)
        ).scalar()
        if close is not None:
            closes[symbol] = float(close)
    return closes


def marked_equity(
    cash: float, high_water_mark: float | None, marked: float
) -> tuple[float, float, float]:
    """(equity, high-water mark, drawdown %) of a snapshot's cash plus open positions
    marked at ``marked``: snapshots come with fills and daily, prices move in between."""
    equity = float(cash) + marked
    high_water = max(float(high_water_mark or 0.0), equity)
    drawdown = max(0.0, (high_water - equity) / high_water * 100.0) if high_water > 0 else 0.0
    return equity, high_water, drawdown


def latest_run_id_of(engine: Engine) -> str:
    """``latest_run_id`` on a connection of its own; NoSuchRun when there is no run."""
    with engine.connect() as conn:
        run_id = latest_run_id(conn)
    if run_id is None:
        raise NoSuchRun("no run in the read models yet")
    return run_id


def current_parameters(engine: Engine, run_id: str) -> dict[str, Any] | None:
    """The run's latest adaptive-intensity parameters (its last ``intensity_changed``),
    or None if the intensity never changed them."""
    table = tables.risk_parameters
    with engine.connect() as conn:
        row = conn.execute(
            select(table).where(table.c.run_id == run_id).order_by(table.c.sequence.desc()).limit(1)
        ).first()
    return None if row is None else {str(k): v for k, v in row._mapping.items()}


def run_status(engine: Engine, run_id: str | None = None) -> dict[str, Any]:
    """The run's state, equity, drawdown, positions and last candle, from the read models
    (the newest unfinished run, else the newest, when ``run_id`` is None)."""
    with engine.connect() as conn:
        if run_id is None:
            run_id = latest_run_id(conn)
            if run_id is None:
                raise NoSuchRun("no run in the read models yet")
        run = conn.execute(select(tables.runs).where(tables.runs.c.run_id == run_id)).first()
        if run is None:
            raise NoSuchRun(f"no run {run_id!r} in the read models")
        runs = run._mapping
        candles = tables.candles
        last_candle = conn.execute(
            select(func.max(candles.c.timestamp), func.count()).where(candles.c.run_id == run_id)
        ).one()
        curve = tables.equity_curve
        snapshot = conn.execute(
            select(curve).where(curve.c.run_id == run_id).order_by(curve.c.sequence.desc()).limit(1)
        ).first()
        held = conn.execute(
            select(tables.positions)
            .where(tables.positions.c.run_id == run_id)
            .where(tables.positions.c.quantity != 0)
            .order_by(tables.positions.c.symbol)
        ).all()
        fills = conn.execute(
            select(func.count()).where(tables.trades.c.run_id == run_id)
        ).scalar_one()
        closes = last_closes(conn, run_id, [str(row._mapping["symbol"]) for row in held])
    positions = []
    marked = 0.0
    for row in held:
        p = row._mapping
        price = closes.get(str(p["symbol"]), p["last_price"])
        value = float(p["quantity"]) * float(price) if price is not None else 0.0
        marked += value
        positions.append(
            {
                "symbol": p["symbol"],
                "quantity": p["quantity"],
                "avg_entry_price": p["avg_entry_price"],
                "last_price": price,
                "value": value,
                "unrealized_pnl": (
                    float(p["quantity"]) * (float(price) - float(p["avg_entry_price"]))
                    if price is not None and p["avg_entry_price"] is not None
                    else None
                ),
            }
        )
    equity = drawdown = high_water = None
    if snapshot is not None:
        s = snapshot._mapping
        equity, high_water, drawdown = marked_equity(s["cash"], s["high_water_mark"], marked)
    return {
        "run_id": run_id,
        "status": runs["status"],
        "strategy": runs["strategy_id"],
        "started_at": runs["started_at"],
        "ended_at": runs["ended_at"],
        "candles": int(last_candle[1]),
        "last_candle_at": last_candle[0],
        "initial_cash": runs["initial_cash"],
        "equity": equity,
        "high_water_mark": high_water,
        "drawdown_pct": drawdown,
        "fills": int(fills),
        "open_positions": positions,
    }


def projection_lag(
    engine: Engine, projector: str, ends: Mapping[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """Records of each topic partition in the log (``ends``: their end offsets) the read
    models have not folded yet."""
    with engine.connect() as conn:
        done = checkpoints_of(conn, projector)
    return {at: max(0, end - done.get(at, 0)) for at, end in ends.items()}


def projection_lags(log: EventLog, engine: Engine) -> dict[tuple[str, int], int]:
    """Records of each topic partition of ``log`` the read models have not folded yet."""
    names = set(log.topic_names())
    ends = {
        (topic, partition): log.end_offset(topic, partition)
        for topic in SOURCE_TOPICS
        if topic in names
        for partition in range(log.partitions(topic))
    }
    return projection_lag(engine, projector_name(log), ends)


def total_lag(log: EventLog, engine: Engine) -> int:
    """Records of ``log`` the read models have not folded yet, over every partition."""
    return sum(projection_lags(log, engine).values())


def run_status_with_lag(
    engine: Engine, log: EventLog | None, run_id: str | None = None
) -> dict[str, Any]:
    """``run_status``, with ``lag`` (``total_lag``) when there is a log.

    The lag is read before the status: read after it, a projector folding meanwhile
    could make the lag 0 beside a status that misses what was folded in between.
    """
    lag = None if log is None else total_lag(log, engine)
    status = run_status(engine, run_id)
    if lag is not None:
        status["lag"] = lag
    return status
