"""The read-model projector: folds the log into tables, exactly once.

Guarantees:

1. Each batch of one topic partition is applied in one database transaction together with
   the projector's checkpoint (the next offset to read), so a crash at any point either
   keeps the whole batch and its checkpoint or neither: no event is lost or applied twice.
2. Applying an event is an idempotent upsert keyed by ids inside the event, so even a
   replay of an already-applied batch would leave the tables unchanged.
3. The same code path serves a live catch-up and a rebuild from offset zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, Table, select

from domain.events import (
    Alert,
    BacktestRunMetadata,
    DeadLetter,
    Event,
    PortfolioSnapshot,
    PositionState,
    RiskState,
    RunCompleted,
    SimulatedOrder,
    SimulatedTrade,
)
from projections import tables
from projections.store import upsert
from streams import topics
from streams.codec import DecodeError, decode
from streams.log_port import EventLog, Record

PROJECTOR = "read_models"


def projector_name(log: EventLog) -> str:
    """Checkpoints are positions in one log: each log has its own."""
    return PROJECTOR if log.identity == "embedded" else f"{PROJECTOR}@{log.identity}"


SOURCE_TOPICS: tuple[str, ...] = (
    topics.RUNS,
    topics.ORDERS,
    topics.ORDER_RESULTS,
    topics.PORTFOLIO,
    topics.ALERTS,
    topics.DEAD_LETTERS,
)
BATCH_SIZE = 2000


class ProjectionError(RuntimeError):
    pass


Row = dict[str, Any]
Change = tuple[Table, Row]


def _run_started(e: BacktestRunMetadata) -> Iterator[Change]:
    yield (
        tables.runs,
        {
            "run_id": e.run_id,
            "strategy_id": e.strategy_id,
            "code_version": e.code_version,
            "config_json": orjson.dumps(e.config, option=orjson.OPT_SORT_KEYS).decode(),
            "config_hash": e.config_hash,
            "data_sources_json": orjson.dumps([s.model_dump() for s in e.data_sources]).decode(),
            "seed": e.seed,
            "started_at": e.timestamp,
            "status": "RUNNING",
        },
    )


def _run_completed(e: RunCompleted) -> Iterator[Change]:
    yield (
        tables.runs,
        {
            "run_id": e.run_id,
            "ended_at": e.timestamp,
            "status": "COMPLETED",
            "candles": e.candles,
            "signals": e.signals,
            "orders": e.orders,
            "fills": e.fills,
            "rejected": e.rejected,
            "dead_letters": e.dead_letters,
            **e.statistics.model_dump(),
        },
    )


def _order_placed(e: SimulatedOrder) -> Iterator[Change]:
    yield (
        tables.orders,
        {
            "run_id": e.run_id,
            "order_id": e.order_id,
            "symbol": e.symbol,
            "side": e.side,
            "quantity": e.quantity,
            "created_at": e.timestamp,
        },
    )


def _order_result(e: SimulatedTrade) -> Iterator[Change]:
    yield (
        tables.orders,
        {
            "run_id": e.run_id,
            "order_id": e.order_id,
            "status": e.status,
            "filled_quantity": e.filled_quantity,
            "price": e.price,
            "fee": e.fee,
            "reason": e.reason,
            "resulted_at": e.timestamp,
        },
    )
    if e.status == "FILLED":
        yield (
            tables.trades,
            {
                "run_id": e.run_id,
                "order_id": e.order_id,
                "symbol": e.symbol,
                "side": e.side,
                "quantity": e.filled_quantity,
                "price": e.price,
                "fee": e.fee,
                "timestamp": e.timestamp,
            },
        )


def _position(e: PositionState) -> Iterator[Change]:
    yield (
        tables.positions,
        {
            "run_id": e.run_id,
            "symbol": e.symbol,
            "quantity": e.quantity,
            "avg_entry_price": e.avg_entry_price,
            "realized_pnl": e.realized_pnl,
            "last_price": e.last_price,
            "updated_at": e.timestamp,
        },
    )
    yield (
        tables.trades,
        {
            "run_id": e.run_id,
            "order_id": e.order_id,
            "realized_pnl": e.trade_realized_pnl,
            "position_after": e.quantity,
        },
    )


def _snapshot(e: PortfolioSnapshot) -> Iterator[Change]:
    yield (
        tables.equity_curve,
        {
            "run_id": e.run_id,
            "sequence": e.sequence,
            "timestamp": e.timestamp,
            "equity": e.equity,
            "cash": e.cash,
            "high_water_mark": e.high_water_mark,
            "drawdown_pct": e.drawdown_pct,
            "exposure_pct": e.exposure_pct,
            "realized_pnl": e.realized_pnl,
            "open_positions": e.open_positions,
        },
    )


def _risk_state(e: RiskState) -> Iterator[Change]:
    yield (
        tables.risk_states,
        {
            "run_id": e.run_id,
            "sequence": e.sequence,
            "timestamp": e.timestamp,
            "trading_state": e.trading_state,
            "kill_switch": e.kill_switch,
            "drawdown_pct": e.drawdown_pct,
            "exposure_pct": e.exposure_pct,
            "reason_code": e.reason_code,
        },
    )


def _alert(e: Alert) -> Iterator[Change]:
    yield (
        tables.alerts,
        {
            "run_id": e.run_id,
            "sequence": e.sequence,
            "timestamp": e.timestamp,
            "level": e.level,
            "code": e.code,
            "message": e.message,
            "symbol": e.symbol,
        },
    )


def _dead_letter(e: DeadLetter) -> Iterator[Change]:
    yield (
        tables.dead_letters,
        {
            "run_id": e.run_id,
            "sequence": e.sequence,
            "source": e.source,
            "line": e.line,
            "raw": e.raw,
            "reason": e.reason,
        },
    )


# One explicit table routes each event type to its handler.
HANDLERS: dict[str, Callable[[Any], Iterable[Change]]] = {
    "run_metadata": _run_started,
    "run_completed": _run_completed,
    "order": _order_placed,
    "order_result": _order_result,
    "position_state": _position,
    "portfolio_snapshot": _snapshot,
    "risk_state": _risk_state,
    "alert": _alert,
    "dead_letter": _dead_letter,
}


@dataclass
class ProjectionProgress:
    events: int = 0
    batches: int = 0


def _apply(
    engine: Engine, projector: str, topic: str, partition: int, records: list[Record]
) -> None:
    groups: dict[tuple[str, tuple[str, ...]], tuple[Table, dict[tuple[Any, ...], Row]]] = {}
    for record in records:
        try:
            event: Event = decode(record.value)
        except DecodeError as exc:
            raise ProjectionError(
                f"{topic}/{partition} offset {record.offset} cannot be decoded: {exc}"
            ) from None
        handler = HANDLERS.get(event.type)
        if handler is None:
            continue
        for table, row in handler(event):
            key = (table.name, tuple(row))
            _, rows = groups.setdefault(key, (table, {}))
            pk = tuple(row[c.name] for c in table.primary_key.columns)
            rows.pop(pk, None)  # the latest event for a key wins, as it would row by row
            rows[pk] = row
    next_offset = records[-1].offset + 1
    with engine.begin() as conn:
        for table, rows in groups.values():
            upsert(conn, table, list(rows.values()))
        upsert(
            conn,
            tables.checkpoints,
            [
                {
                    "projector": projector,
                    "topic": topic,
                    "partition": partition,
                    "next_offset": next_offset,
                }
            ],
        )


def checkpoint(engine: Engine, projector: str, topic: str, partition: int) -> int:
    with engine.connect() as conn:
        value = conn.execute(
            select(tables.checkpoints.c.next_offset).where(
                tables.checkpoints.c.projector == projector,
                tables.checkpoints.c.topic == topic,
                tables.checkpoints.c.partition == partition,
            )
        ).scalar()
    return int(value) if value is not None else 0


def catch_up(
    log: EventLog,
    engine: Engine,
    batch_size: int = BATCH_SIZE,
    until: Mapping[tuple[str, int], int] | None = None,
) -> ProjectionProgress:
    """Fold every record the projector has not yet applied; return how much it did.

    With ``until`` (end offsets by topic and partition, e.g. what a run just wrote), fold
    exactly up to them and leave other partitions alone: no waiting to learn where a
    partition ends, which on a broker takes a round of idle fetches.
    """
    progress = ProjectionProgress()
    projector = projector_name(log)
    available = set(log.topic_names())
    for topic in SOURCE_TOPICS:
        if topic not in available:
            continue
        for partition in range(log.partitions(topic)):
            end = None if until is None else until.get((topic, partition))
            if until is not None and end is None:
                continue
            batch: list[Record] = []
            start = checkpoint(engine, projector, topic, partition)
            if end is not None and start >= end:
                continue
            for record in log.read(topic, partition, start, end):
                batch.append(record)
                if len(batch) >= batch_size:
                    _apply(engine, projector, topic, partition, batch)
                    progress.events += len(batch)
                    progress.batches += 1
                    batch = []
            if batch:
                _apply(engine, projector, topic, partition, batch)
                progress.events += len(batch)
                progress.batches += 1
    return progress
