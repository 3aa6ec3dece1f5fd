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

import functools
import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Table, delete, select

from domain.events import (
    Alert,
    BacktestRunMetadata,
    DeadLetter,
    Event,
    MarketDataEvent,
    PortfolioSnapshot,
    PositionState,
    RiskDecision,
    RiskState,
    RunCompleted,
    SimulatedOrder,
    SimulatedTrade,
    StrategySignal,
)
from projections import tables
from projections.store import upsert
from projections.tables import READ_MODELS
from streams import topics
from streams.codec import DecodeError, decode
from streams.collector import collector_paused
from streams.log_port import EventLog, Record

PROJECTOR = "read_models"


def projector_name(log: EventLog) -> str:
    """Checkpoints are positions in one log: each log has its own, so several logs (data
    directories, brokers) can project into one shared store."""
    identity = log.identity
    if len(identity) > 80:
        identity = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return f"{PROJECTOR}@{identity}"


SOURCE_TOPICS: tuple[str, ...] = (
    topics.RUNS,
    topics.SIGNALS,
    topics.RISK_DECISIONS,
    topics.ORDERS,
    topics.ORDER_RESULTS,
    topics.PORTFOLIO,
    topics.ALERTS,
    topics.DEAD_LETTERS,
    topics.MARKET_DATA,
)
BATCH_SIZE = 5000


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


def _candle(e: MarketDataEvent) -> Iterator[Change]:
    yield (
        tables.candles,
        {
            "run_id": e.run_id,
            "symbol": e.symbol,
            "interval": e.interval,
            "timestamp": e.timestamp,
            "sequence": e.sequence,
            "open": e.open,
            "high": e.high,
            "low": e.low,
            "close": e.close,
            "volume": e.volume,
        },
    )


def _signal(e: StrategySignal) -> Iterator[Change]:
    yield (
        tables.signals,
        {
            "run_id": e.run_id,
            "sequence": e.sequence,
            "timestamp": e.timestamp,
            "symbol": e.symbol,
            "direction": e.direction,
            "strength": e.strength,
            "reason": e.reason,
            "strategy_id": e.strategy_id,
            "price": e.price,
        },
    )


def _risk_decision(e: RiskDecision) -> Iterator[Change]:
    yield (
        tables.risk_decisions,
        {
            "run_id": e.run_id,
            "sequence": e.sequence,
            "timestamp": e.timestamp,
            "symbol": e.symbol,
            "requested_direction": e.requested_direction,
            "approved": e.approved,
            "approved_size": e.approved_size,
            "requested_size": e.requested_size,
            "reason_code": e.reason_code,
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
    "market_data": _candle,
    "run_metadata": _run_started,
    "run_completed": _run_completed,
    "signal": _signal,
    "risk_decision": _risk_decision,
    "order": _order_placed,
    "order_result": _order_result,
    "position_state": _position,
    "portfolio_snapshot": _snapshot,
    "risk_state": _risk_state,
    "alert": _alert,
    "dead_letter": _dead_letter,
}


_PRIMARY_KEY: dict[Table, Callable[[Row], Any]] = {
    table: itemgetter(*(c.name for c in table.primary_key.columns))
    for table in (*READ_MODELS, tables.checkpoints, tables.projection_dead_letters)
}


@dataclass
class ProjectionProgress:
    events: int = 0
    batches: int = 0


@dataclass
class _BatchRows:
    """What one batch of records writes: row groups per table, dead letters, checkpoint."""

    groups: list[tuple[Table, list[Row]]]
    dead: list[Row]
    checkpoint: Row | None


def _rows_of(
    projector: str,
    topic: str,
    partition: int,
    records: list[Record],
    only: str | None = None,
    checkpoint_to: bool = True,
) -> _BatchRows:
    """The rows ``records`` produce (of table ``only``, if given) and, with
    ``checkpoint_to``, the position reached."""
    groups: dict[tuple[str, tuple[str, ...]], tuple[Table, dict[tuple[Any, ...], Row]]] = {}
    dead: list[Row] = []
    for record in records:
        try:
            event: Event = decode(record.value)
        except DecodeError as exc:
            # Bad input never stops the projector and never vanishes: it is recorded.
            dead.append(
                {
                    "projector": projector,
                    "topic": topic,
                    "partition": partition,
                    "offset": record.offset,
                    "reason": str(exc)[:2000],
                    "raw": record.value.decode("utf-8", errors="replace")[:10_000],
                }
            )
            continue
        handler = HANDLERS.get(event.type)
        if handler is None:
            continue
        for table, row in handler(event):
            if only is not None and table.name != only:
                continue
            key = (table.name, tuple(row))
            group = groups.get(key)
            if group is None:
                group = groups[key] = (table, {})
            # The latest event for a key wins, as it would row by row.
            group[1][_PRIMARY_KEY[table](row)] = row
    checkpoint = None
    if checkpoint_to:
        checkpoint = {
            "projector": projector,
            "topic": topic,
            "partition": partition,
            "next_offset": records[-1].offset + 1,
        }
    return _BatchRows(
        [(table, list(rows.values())) for table, rows in groups.values()],
        dead if only is None else [],
        checkpoint,
    )


def _write(conn: Connection, batch: _BatchRows) -> None:
    """Write one batch's rows, in the caller's transaction."""
    for table, rows in batch.groups:
        upsert(conn, table, rows)
    if batch.dead:
        upsert(conn, tables.projection_dead_letters, batch.dead)
    if batch.checkpoint is not None:
        upsert(conn, tables.checkpoints, [batch.checkpoint])


def _apply(
    conn: Connection,
    projector: str,
    topic: str,
    partition: int,
    records: list[Record],
) -> None:
    _write(conn, _rows_of(projector, topic, partition, records))


class _WriterThread:
    """Writes batches in order on one connection while the caller decodes the next ones.

    Postgres takes a batch's COPY while this process decodes the following batch: the
    thread waits on the server with the GIL released. Batches are written in the order
    they were handed over, in the caller's transaction; the first failure stops the
    writing and is raised to the caller.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._queue: queue.Queue[_BatchRows | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cdb-rebuild-writer")
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the caller learns of the failure at its next put
            try:
                _write(self._conn, batch)
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc

    def put(self, batch: _BatchRows) -> None:
        if self._error is not None:
            self.close()
        self._queue.put(batch)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _checkpoints(conn: Connection, projector: str) -> dict[tuple[str, int], int]:
    rows = conn.execute(
        select(
            tables.checkpoints.c.topic,
            tables.checkpoints.c.partition,
            tables.checkpoints.c.next_offset,
        ).where(tables.checkpoints.c.projector == projector)
    )
    return {(topic, int(partition)): int(offset) for topic, partition, offset in rows}


def checkpoint_in(conn: Connection, projector: str, topic: str, partition: int) -> int:
    """The next offset ``projector`` folds in that partition, as of ``conn``'s transaction."""
    found = conn.execute(
        select(tables.checkpoints.c.next_offset).where(
            tables.checkpoints.c.projector == projector,
            tables.checkpoints.c.topic == topic,
            tables.checkpoints.c.partition == partition,
        )
    ).scalar()
    return int(found) if found is not None else 0


def checkpoint(engine: Engine, projector: str, topic: str, partition: int) -> int:
    with engine.connect() as conn:
        return checkpoint_in(conn, projector, topic, partition)


def catch_up(
    log: EventLog,
    engine: Engine,
    batch_size: int = BATCH_SIZE,
    until: Mapping[tuple[str, int], int] | None = None,
) -> ProjectionProgress:
    """Fold every record the projector has not yet applied; return how much it did.

    Each batch and its checkpoint are one transaction. With ``until`` (end offsets by topic
    and partition, e.g. what a run just wrote), fold exactly up to them and leave other
    partitions alone: no waiting to learn where a partition ends, which on a broker takes
    a round of idle fetches.
    """
    with collector_paused():
        return _catch_up(log, engine, batch_size, until)


def _catch_up(
    log: EventLog,
    engine: Engine,
    batch_size: int,
    until: Mapping[tuple[str, int], int] | None,
) -> ProjectionProgress:
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
            start = checkpoint(engine, projector, topic, partition)
            if end is not None and start >= end:
                continue
            for batch in _batches(log.read(topic, partition, start, end), batch_size):
                with engine.begin() as conn:
                    _apply(conn, projector, topic, partition, batch)
                progress.events += len(batch)
                progress.batches += 1
    return progress


# Tables whose rows later events complete (an order by its result, a fill by the position
# state that follows it, a run by its completion, a position by every fill): see the
# handlers above.
_COMPLETED_LATER = frozenset({"orders", "trades", "runs", "positions"})
HELD_ROWS = 500_000


class _HeldRows:
    """During a rebuild, rows of ``_COMPLETED_LATER`` tables are merged here, in fold order,
    and written once complete: one COPY of finished rows instead of a COPY of new rows and a
    merge of every update into them. Past ``limit`` rows the held ones are written early,
    and whatever later events add to them is merged by the store as usual."""

    def __init__(self, limit: int | None = None) -> None:
        self._limit = HELD_ROWS if limit is None else limit
        self._rows: dict[Table, dict[Any, Row]] = {}
        self._count = 0

    def take(self, batch: _BatchRows) -> _BatchRows:
        """Keep the batch's rows of held tables; return the batch without them."""
        passed = []
        for table, rows in batch.groups:
            if table.name not in _COMPLETED_LATER:
                passed.append((table, rows))
                continue
            held = self._rows.setdefault(table, {})
            key_of = _PRIMARY_KEY[table]
            for row in rows:
                key = key_of(row)
                existing = held.get(key)
                if existing is None:
                    held[key] = dict(row)
                    self._count += 1
                else:
                    existing.update(row)  # later columns win, as a later upsert would
        return _BatchRows(passed, batch.dead, batch.checkpoint)

    def full(self) -> bool:
        return self._count >= self._limit

    def release(self) -> _BatchRows:
        """The held rows, grouped by table and columns, and forgotten here."""
        groups: dict[tuple[str, tuple[str, ...]], tuple[Table, list[Row]]] = {}
        for table, held in self._rows.items():
            for row in held.values():
                groups.setdefault((table.name, tuple(row)), (table, []))[1].append(row)
        self._rows = {}
        self._count = 0
        return _BatchRows(list(groups.values()), [], None)


def rebuild(
    log: EventLog, engine: Engine, projection: str | None = None, batch_size: int = BATCH_SIZE
) -> ProjectionProgress:
    """Refold read models from offset zero; readers see the old tables until it is done.

    Everything happens in one transaction, so no reader ever sees a half-built table (the
    database's snapshot isolation keeps showing them the old rows) and a failure leaves the
    old tables as they were. Without ``projection`` all read models are refolded up to the
    end of the log, with new checkpoints; with it, only that table, up to the positions the
    other tables have reached, so it matches them.
    """
    by_name = {table.name: table for table in READ_MODELS}
    if projection is not None and projection not in by_name:
        raise ProjectionError(
            f"unknown projection {projection!r} (projections: {', '.join(sorted(by_name))})"
        )
    progress = ProjectionProgress()
    projector = projector_name(log)
    available = set(log.topic_names())
    with collector_paused(), engine.begin() as conn:
        reached = _checkpoints(conn, projector)
        targets = [by_name[projection]] if projection is not None else list(READ_MODELS)
        for table in targets:
            conn.execute(delete(table))
        if projection is None:
            conn.execute(
                delete(tables.checkpoints).where(tables.checkpoints.c.projector == projector)
            )
        # On Postgres the rows are written by a second thread while this one decodes.
        writer = _WriterThread(conn) if conn.dialect.name == "postgresql" else None
        try:
            write = writer.put if writer is not None else functools.partial(_write, conn)
            held = _HeldRows()
            for topic in SOURCE_TOPICS:
                if topic not in available:
                    continue
                for partition in range(log.partitions(topic)):
                    end = reached.get((topic, partition), 0) if projection is not None else None
                    if end == 0:
                        continue
                    records = log.read(topic, partition, 0, end)
                    for batch in _batches(records, batch_size):
                        rows = _rows_of(
                            projector,
                            topic,
                            partition,
                            batch,
                            projection,
                            checkpoint_to=projection is None,
                        )
                        write(held.take(rows))
                        if held.full():
                            write(held.release())
                        progress.events += len(batch)
                        progress.batches += 1
            write(held.release())
        finally:
            if writer is not None:
                writer.close()  # every batch written (or the writer's failure raised)
    return progress


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
