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
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Table, delete, select

from domain.events import (
    BacktestRunMetadata,
    RunCompleted,
    RunStatistics,
    SimulatedTrade,
)
from projections import tables
from projections.store import (
    add_primary_key,
    append_values,
    create_shadow,
    index_shadow,
    swap_in,
    upsert,
    upsert_values,
)
from projections.tables import READ_MODELS
from streams import topics
from streams.codec import DecodeError, decode_view, decode_views
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
Values = tuple[Any, ...]


@dataclass(frozen=True, eq=False)
class RowMap:
    """How one kind of event writes one row of one table: the columns it sets, the
    function that reads their values off the event, and, if not every such event writes
    the row, the condition."""

    table: Table
    columns: tuple[str, ...]
    values: Callable[[Any], Values]
    when: Callable[[Any], bool] | None = None

    def __post_init__(self) -> None:
        # The row's primary key, from its values.
        object.__setattr__(self, "key", key_of(self.table, self.columns))

    key: Callable[[Values], Any] = field(init=False)


@functools.cache
def key_of(table: Table, columns: tuple[str, ...]) -> Callable[[Values], Any]:
    """The primary key of ``table``'s rows given as values of ``columns``."""
    return itemgetter(*(columns.index(c.name) for c in table.primary_key.columns))


def _fields(table: Table, *fields: str, when: Callable[[Any], bool] | None = None) -> RowMap:
    """Columns read straight off the event's fields; ``"column=field"`` where they differ."""
    columns, attributes = [], []
    for spec in fields:
        column, _, attribute = spec.partition("=")
        columns.append(column)
        attributes.append(attribute or column)
    getter = attrgetter(*attributes)
    return RowMap(table, tuple(columns), getter, when)


def _run_started(e: BacktestRunMetadata) -> Values:
    return (
        e.run_id,
        e.strategy_id,
        e.code_version,
        orjson.dumps(e.config, option=orjson.OPT_SORT_KEYS).decode(),
        e.config_hash,
        orjson.dumps([s.model_dump() for s in e.data_sources]).decode(),
        e.seed,
        e.timestamp,
        "RUNNING",
    )


_STATISTICS = tuple(RunStatistics.model_fields)


def _run_completed(e: RunCompleted) -> Values:
    counts = (e.candles, e.signals, e.orders, e.fills, e.rejected, e.dead_letters)
    return (e.run_id, e.timestamp, "COMPLETED", *counts, *attrgetter(*_STATISTICS)(e.statistics))


def _filled(e: SimulatedTrade) -> bool:
    return e.status == "FILLED"


# One explicit table routes each event type to the rows it writes.
ROW_MAPS: dict[str, tuple[RowMap, ...]] = {
    "market_data": (
        _fields(
            tables.candles,
            *("run_id", "symbol", "interval", "timestamp", "sequence"),
            *("open", "high", "low", "close", "volume"),
        ),
    ),
    "run_metadata": (
        RowMap(
            tables.runs,
            (
                *("run_id", "strategy_id", "code_version", "config_json", "config_hash"),
                *("data_sources_json", "seed", "started_at", "status"),
            ),
            _run_started,
        ),
    ),
    "run_completed": (
        RowMap(
            tables.runs,
            (
                *("run_id", "ended_at", "status", "candles", "signals", "orders", "fills"),
                *("rejected", "dead_letters", *_STATISTICS),
            ),
            _run_completed,
        ),
    ),
    "signal": (
        _fields(
            tables.signals,
            *("run_id", "sequence", "timestamp", "symbol", "direction", "strength"),
            *("reason", "strategy_id", "price"),
        ),
    ),
    "risk_decision": (
        _fields(
            tables.risk_decisions,
            *("run_id", "sequence", "timestamp", "symbol", "requested_direction"),
            *("approved", "approved_size", "requested_size", "reason_code"),
        ),
    ),
    "order": (
        _fields(
            tables.orders,
            *("run_id", "order_id", "symbol", "side", "quantity", "created_at=timestamp"),
        ),
    ),
    "order_result": (
        _fields(
            tables.orders,
            *("run_id", "order_id", "status", "filled_quantity", "price", "fee", "reason"),
            "resulted_at=timestamp",
        ),
        _fields(
            tables.trades,
            *("run_id", "order_id", "symbol", "side", "quantity=filled_quantity", "price"),
            *("fee", "timestamp"),
            when=_filled,
        ),
    ),
    "position_state": (
        _fields(
            tables.positions,
            *("run_id", "symbol", "quantity", "avg_entry_price", "realized_pnl", "last_price"),
            "updated_at=timestamp",
        ),
        _fields(
            tables.trades,
            *("run_id", "order_id", "realized_pnl=trade_realized_pnl", "position_after=quantity"),
        ),
    ),
    "portfolio_snapshot": (
        _fields(
            tables.equity_curve,
            *("run_id", "sequence", "timestamp", "equity", "cash", "high_water_mark"),
            *("drawdown_pct", "exposure_pct", "realized_pnl", "open_positions"),
        ),
    ),
    "risk_state": (
        _fields(
            tables.risk_states,
            *("run_id", "sequence", "timestamp", "trading_state", "kill_switch"),
            *("drawdown_pct", "exposure_pct", "reason_code"),
        ),
    ),
    "alert": (
        _fields(
            tables.alerts,
            *("run_id", "sequence", "timestamp", "level", "code", "message", "symbol"),
        ),
    ),
    "dead_letter": (
        _fields(
            tables.dead_letters,
            *("run_id", "sequence", "source", "line", "raw", "reason"),
        ),
    ),
}

_ROW_MAPS_OF_TABLE: dict[str, dict[str, tuple[RowMap, ...]]] = {
    table.name: {
        event_type: tuple(m for m in maps if m.table is table)
        for event_type, maps in ROW_MAPS.items()
    }
    for table in READ_MODELS
}


@dataclass
class ProjectionProgress:
    events: int = 0
    batches: int = 0


@dataclass
class _BatchRows:
    """What one batch of records writes: row groups per table, dead letters, checkpoint."""

    groups: list[tuple[Table, tuple[str, ...], list[Values]]]
    dead: list[Row]
    checkpoint: Row | None
    # Rows a rebuild writes before later events have completed them (see _HeldRows).
    incomplete: bool = False


def _checkpoint_row(projector: str, topic: str, partition: int, next_offset: int) -> Row:
    return {
        "projector": projector,
        "topic": topic,
        "partition": partition,
        "next_offset": next_offset,
    }


def _rows_of(
    projector: str,
    topic: str,
    partition: int,
    records: list[Record],
    only: str | None = None,
    checkpoint_to: bool = True,
    distinct_keys: bool = True,
) -> _BatchRows:
    """The rows ``records`` produce (of table ``only``, if given) and, with
    ``checkpoint_to``, the position reached. With ``distinct_keys`` the rows of a group
    have distinct keys (the last event for a key wins, as it would row by row); without,
    every row is kept in fold order, for a writer that resolves keys itself."""
    maps = ROW_MAPS if only is None else _ROW_MAPS_OF_TABLE[only]
    keyed: dict[RowMap, dict[Any, Values]] = {}
    listed: dict[RowMap, list[Values]] = {}
    dead: list[Row] = []
    events = decode_views([record.value for record in records])
    if events is None:
        events = []
        for record in records:
            try:
                events.append(decode_view(record.value))
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
    for event in events:
        for row_map in maps.get(event.type, ()):
            if row_map.when is not None and not row_map.when(event):
                continue
            values = row_map.values(event)
            if distinct_keys:
                by_key = keyed.get(row_map)
                if by_key is None:
                    by_key = keyed[row_map] = {}
                by_key[row_map.key(values)] = values
            else:
                rows = listed.get(row_map)
                if rows is None:
                    rows = listed[row_map] = []
                rows.append(values)
    for row_map, by_key in keyed.items():
        listed[row_map] = list(by_key.values())
    checkpoint = None
    if checkpoint_to:
        checkpoint = _checkpoint_row(projector, topic, partition, records[-1].offset + 1)
    return _BatchRows(
        [(row_map.table, row_map.columns, rows) for row_map, rows in listed.items()],
        dead if only is None else [],
        checkpoint,
    )


def _write(conn: Connection, batch: _BatchRows) -> None:
    """Write one batch's rows, in the caller's transaction."""
    for table, columns, rows in batch.groups:
        upsert_values(conn, table, columns, rows)
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
        # A row is its columns and values until a second part is merged into it as a dict.
        self._rows: dict[Table, dict[Any, tuple[tuple[str, ...], Values] | Row]] = {}
        self._count = 0

    def take(self, batch: _BatchRows) -> _BatchRows:
        """Keep the batch's rows of held tables; return the batch without them."""
        passed = []
        for table, columns, rows in batch.groups:
            if table.name not in _COMPLETED_LATER:
                passed.append((table, columns, rows))
                continue
            held = self._rows.setdefault(table, {})
            key = key_of(table, columns)
            for values in rows:
                row_key = key(values)
                existing = held.get(row_key)
                if existing is None:
                    # Most rows get one more part; they are merged when it comes.
                    held[row_key] = (columns, values)
                    self._count += 1
                else:  # later columns win, as a later upsert would
                    if isinstance(existing, tuple):
                        existing = held[row_key] = dict(zip(*existing, strict=True))
                    existing.update(zip(columns, values, strict=True))
        return _BatchRows(passed, batch.dead, batch.checkpoint)

    def full(self) -> bool:
        return self._count >= self._limit

    def release(self, *, complete: bool, table: Table | None = None) -> _BatchRows:
        """The held rows (of ``table`` only, if given), grouped by table and columns, and
        forgotten here; ``complete`` when no later event can add to them."""
        groups: dict[tuple[Table, tuple[str, ...]], list[Values]] = {}
        for held_table in [table] if table is not None else list(self._rows):
            held = self._rows.pop(held_table, {})
            self._count -= len(held)
            for row in held.values():
                if isinstance(row, tuple):
                    groups.setdefault((held_table, row[0]), []).append(row[1])
                else:
                    groups.setdefault((held_table, tuple(row)), []).append(tuple(row.values()))
        return _BatchRows(
            [(t, c, rows) for (t, c), rows in groups.items()], [], None, incomplete=not complete
        )


def _feeding_topics() -> dict[Table, frozenset[str]]:
    feeding: dict[Table, set[str]] = {table: set() for table in READ_MODELS}
    for event_type, maps in ROW_MAPS.items():
        for row_map in maps:
            feeding[row_map.table].add(topics.TOPIC_OF_EVENT[event_type])
    return {table: frozenset(names) for table, names in feeding.items()}


# The topics whose events write each table: once a rebuild has read them all, the table
# is complete.
FEEDING_TOPICS: dict[Table, frozenset[str]] = _feeding_topics()


class _Rebuilt:
    """Where a rebuild writes: the tables themselves, emptied first (SQLite, whose readers
    keep seeing the old rows until the commit)."""

    def __init__(self, conn: Connection, targets: Iterable[Table]) -> None:
        self._conn = conn
        for table in targets:
            conn.execute(delete(table))

    def write(self, batch: _BatchRows) -> None:
        _write(self._conn, batch)

    def complete(self, table: Table) -> None:
        """No more rows will come for ``table``."""

    def finish(self) -> None:
        """Every row has been written."""

    def close(self) -> None:
        """Stop writing (after ``finish``, or on a failure)."""


class _Shadows(_Rebuilt):
    """Where a Postgres rebuild writes: a fresh table beside each one refolded
    (``store.create_shadow``), swapped in at the end of the rebuild's transaction.

    A second thread writes, in order, on the rebuild's connection, while the caller decodes
    the next batches: Postgres takes a COPY, or builds the indexes of a table just
    completed, while this process decodes (the thread waits on the server with the GIL
    released). Rows are appended to tables without a key, which get it with their indexes
    once complete. Only where rows are written before they are complete (held rows released
    early), the table gets its key at once, so the rest can be merged into them.
    """

    def __init__(self, conn: Connection, targets: Iterable[Table]) -> None:
        self._conn = conn
        self._tables = {table: create_shadow(conn, table) for table in targets}
        self._keyed: set[Table] = set()
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cdb-rebuild-writer")
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is not None:
                continue  # drain: the caller learns of the failure at its next call
            try:
                job()
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc

    def _submit(self, job: Callable[[], None]) -> None:
        if self._error is not None:
            self.close()
        self._jobs.put(job)

    def write(self, batch: _BatchRows) -> None:
        self._submit(functools.partial(self._write_now, batch))

    def _write_now(self, batch: _BatchRows) -> None:
        conn = self._conn
        for table, columns, rows in batch.groups:
            shadow = self._tables[table]
            if batch.incomplete and table not in self._keyed:
                add_primary_key(conn, shadow)
                self._keyed.add(table)
            if table in self._keyed:
                upsert_values(conn, shadow, columns, rows)
            else:
                append_values(conn, shadow, columns, rows)
        _write(conn, _BatchRows([], batch.dead, batch.checkpoint))

    def complete(self, table: Table) -> None:
        self._submit(functools.partial(index_shadow, self._conn, table, self._tables[table]))

    def finish(self) -> None:
        self.close()  # every job done (or the writer's failure raised)
        for table, shadow in self._tables.items():
            swap_in(self._conn, table, shadow)

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


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
        if projection is None:
            conn.execute(
                delete(tables.checkpoints).where(tables.checkpoints.c.projector == projector)
            )
        shadows = conn.dialect.name == "postgresql"
        into = _Shadows(conn, targets) if shadows else _Rebuilt(conn, targets)
        try:
            held = _HeldRows()
            read: set[str] = set()
            for topic in SOURCE_TOPICS:
                for partition in range(log.partitions(topic)) if topic in available else ():
                    end = reached.get((topic, partition), 0) if projection is not None else None
                    if end == 0:
                        continue
                    records = log.read(topic, partition, 0, end)
                    next_offset = 0
                    for batch in _batches(records, batch_size):
                        rows = _rows_of(
                            projector,
                            topic,
                            partition,
                            batch,
                            projection,
                            # One transaction: only the last position of each partition counts.
                            checkpoint_to=False,
                            # The shadow tables resolve keys when they are indexed.
                            distinct_keys=not shadows,
                        )
                        into.write(held.take(rows))
                        if held.full():
                            into.write(held.release(complete=False))
                        next_offset = batch[-1].offset + 1
                        progress.events += len(batch)
                        progress.batches += 1
                    if projection is None and next_offset:
                        into.write(
                            _BatchRows(
                                [], [], _checkpoint_row(projector, topic, partition, next_offset)
                            )
                        )
                read.add(topic)
                for table in targets:
                    if FEEDING_TOPICS[table] <= read and topic in FEEDING_TOPICS[table]:
                        into.write(held.release(complete=True, table=table))
                        into.complete(table)
            into.finish()
        finally:
            into.close()
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
