"""The read-model projector: folds the log into tables, exactly once.

Guarantees:

1. Each batch of one topic partition is applied in one database transaction together with
   the projector's checkpoint (the next offset to read), so a crash at any point either
   keeps the whole batch and its checkpoint or neither: no event is lost or applied twice.
   (``follow`` on Kafka puts what one poll brought, of several partitions, in one
   transaction with all their checkpoints: the same guarantee.)
2. Applying an event is an idempotent upsert keyed by ids inside the event, so even a
   replay of an already-applied batch would leave the tables unchanged.
3. The same code path serves a live catch-up and a rebuild from offset zero.
4. ``follow`` writes a batch only if the checkpoints it continues are still where it left
   them, in the same transaction: if another writer (a second projector, a rebuild) moved
   them, it follows again from there rather than apply anything twice.
5. A run's metadata is folded together with a ``projected_runs`` row naming this
   projector (this log), in the same transaction: a rebuild of this log later knows the
   run as its own, and a rebuild of another log sharing the store leaves it alone.
6. A transaction writes the read models in table-name order, then the bookkeeping: the
   order in which a Postgres rebuild locks them to swap its tables in
   (``store.lock_for_swap``), so the two never wait for each other in a circle.
7. A SQLite file found damaged while catching up is moved aside and the fold starts
   again, from offset zero, into a fresh one (``projections.sqlite_damage``).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.exc import DBAPIError

from domain.events import (
    BacktestRunMetadata,
    RunCompleted,
    RunStatistics,
    SimulatedTrade,
)
from projections import tables
from projections.sqlite_damage import damage_of, sqlite_file
from projections.store import (
    replace_damaged,
    upsert,
    upsert_values,
)
from projections.tables import READ_MODELS
from runtime.collector import collector_paused
from streams import topics
from streams.codec import DecodeError, decode_view, decode_views
from streams.log_port import EventLog, Followable, Group, LogStream, Record

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
    "intensity_changed": (
        _fields(
            tables.risk_parameters,
            *("run_id", "sequence", "timestamp", "score", "risk_pct"),
            *("max_total_exposure_pct", "max_symbol_exposure_pct", "cooldown_minutes"),
            *("trades", "reason"),
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

# The row map of a run's metadata: each run it writes is recorded as the projector's own.
_RUN_STARTED = ROW_MAPS["run_metadata"][0]

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
    by_topic: dict[str, int] = field(default_factory=dict)


@dataclass
class BatchRows:
    """What one batch of records writes: row groups per table, dead letters, checkpoint."""

    groups: list[tuple[Table, tuple[str, ...], list[Values]]]
    dead: list[Row]
    checkpoint: Row | None
    # Rows a rebuild writes before later events have completed them (see _HeldRows).
    incomplete: bool = False
    # The runs whose metadata the batch folds: rows of tables.projected_runs.
    projected: list[Row] = field(default_factory=list)


def checkpoint_row(projector: str, topic: str, partition: int, next_offset: int) -> Row:
    return {
        "projector": projector,
        "topic": topic,
        "partition": partition,
        "next_offset": next_offset,
    }


def rows_of(
    projector: str,
    topic: str,
    partition: int,
    offsets: Sequence[int],
    values: list[bytes],
    only: str | None = None,
    checkpoint_to: bool = True,
    distinct_keys: bool = True,
) -> BatchRows:
    """The rows the records with these ``offsets`` and ``values`` produce (of table
    ``only``, if given) and, with ``checkpoint_to``, the position reached. With
    ``distinct_keys`` the rows of a group have distinct keys (the last event for a key
    wins, as it would row by row); without, every row is kept in fold order, for a writer
    that resolves keys itself."""
    maps = ROW_MAPS if only is None else _ROW_MAPS_OF_TABLE[only]
    keyed: dict[RowMap, dict[Any, Values]] = {}
    listed: dict[RowMap, list[Values]] = {}
    dead: list[Row] = []
    events = decode_views(values)
    if events is None:
        events = []
        for offset, value in zip(offsets, values, strict=True):
            try:
                events.append(decode_view(value))
            except DecodeError as exc:
                # Bad input never stops the projector and never vanishes: it is recorded.
                dead.append(
                    {
                        "projector": projector,
                        "topic": topic,
                        "partition": partition,
                        "offset": offset,
                        "reason": str(exc)[:2000],
                        "raw": value.decode("utf-8", errors="replace")[:10_000],
                    }
                )
    for event in events:
        for row_map in maps.get(event.type, ()):
            if row_map.when is not None and not row_map.when(event):
                continue
            row = row_map.values(event)
            if distinct_keys:
                by_key = keyed.get(row_map)
                if by_key is None:
                    by_key = keyed[row_map] = {}
                by_key[row_map.key(row)] = row
            else:
                rows = listed.get(row_map)
                if rows is None:
                    rows = listed[row_map] = []
                rows.append(row)
    for row_map, by_key in keyed.items():
        listed[row_map] = list(by_key.values())
    checkpoint = None
    if checkpoint_to:
        checkpoint = checkpoint_row(projector, topic, partition, offsets[-1] + 1)
    started = listed.get(_RUN_STARTED) if only is None else None
    return BatchRows(
        [(row_map.table, row_map.columns, rows) for row_map, rows in listed.items()],
        dead if only is None else [],
        checkpoint,
        projected=[{"projector": projector, "run_id": row[0]} for row in started or ()],
    )


def run_ids_of(batch: BatchRows) -> set[str]:
    """The run ids of the batch's rows (every read model's rows carry one)."""
    found: set[str] = set()
    for _table, columns, rows in batch.groups:
        found.update(map(itemgetter(columns.index("run_id")), rows))
    return found


def write_rows(conn: Connection, batch: BatchRows) -> None:
    """Write one batch's rows, in the caller's transaction."""
    write_batches(conn, [batch])


def write_batches(conn: Connection, batches: Sequence[BatchRows]) -> None:
    """Write the rows of ``batches`` in the caller's transaction: the read models in
    table-name order (guarantee 6; a table's groups keep their order, so a later event's
    row still comes after an earlier one's), then the bookkeeping."""
    groups = [group for batch in batches for group in batch.groups]
    for table, columns, rows in sorted(groups, key=_table_name):
        upsert_values(conn, table, columns, rows)
    dead = [row for batch in batches for row in batch.dead]
    if dead:
        upsert(conn, tables.projection_dead_letters, dead)
    projected = {tuple(row.values()): row for batch in batches for row in batch.projected}
    if projected:
        upsert(conn, tables.projected_runs, list(projected.values()))
    done = {(c["topic"], c["partition"]): c for b in batches if (c := b.checkpoint) is not None}
    if done:
        upsert(conn, tables.checkpoints, list(done.values()))


def _table_name(group: tuple[Table, tuple[str, ...], list[Values]]) -> str:
    return group[0].name


def checkpoints_of(conn: Connection, projector: str) -> dict[tuple[str, int], int]:
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

    A SQLite file found damaged on the way is moved aside and everything is folded again
    into a fresh one (guarantee 7).
    """
    with collector_paused():
        try:
            return _catch_up(log, engine, batch_size, until)
        except DBAPIError as exc:
            reason = damage_of(exc)
            if reason is None or sqlite_file(engine) is None:
                raise
        replace_damaged(engine)
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
            if end is None and log.exact_end_offsets:
                _check_not_ahead(log, topic, partition, start)
            for offsets, values in value_batches(log, topic, partition, start, end, batch_size):
                rows = rows_of(projector, topic, partition, offsets, values)
                with engine.begin() as conn:
                    write_rows(conn, rows)
                progress.events += len(values)
                progress.batches += 1
                progress.by_topic[topic] = progress.by_topic.get(topic, 0) + len(values)
    return progress


def _check_not_ahead(log: EventLog, topic: str, partition: int, checkpoint_at: int) -> None:
    """Read models that folded records the log no longer has (a partition cut by
    ``cdb log repair --force``, a log replaced at the same place) would silently skip the
    records that take those offsets next: they must be rebuilt instead."""
    log_end = log.end_offset(topic, partition)
    if checkpoint_at > log_end:
        raise ProjectionError(
            f"the read models are ahead of the log in {topic}/{partition} (folded up to "
            f"offset {checkpoint_at}, the log ends at {log_end}): the log was cut or "
            "replaced; run `cdb projections rebuild`"
        )


def batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def value_batches(
    log: EventLog, topic: str, partition: int, start: int, end: int | None, size: int
) -> Iterator[tuple[list[int], list[bytes]]]:
    """The offsets and values of the records in ``start <= offset < end``, about ``size``
    at a time (a log that stores batches gives whole ones, without a record per value)."""
    offsets: list[int] = []
    values: list[bytes] = []
    for _key, first, stored in log.read_values(topic, partition, start, end):
        offsets.extend(range(first, first + len(stored)))
        values.extend(stored)
        if len(values) >= size:
            yield offsets, values
            offsets, values = [], []
    if values:
        yield offsets, values


# -- following the log ------------------------------------------------------------------------

# How often a follower looks for topics or partitions that appeared (a projector may start
# before the feed creates its topics), and reports the lag while nothing arrives.
TOPOLOGY_EVERY_S = 1.0
IDLE_REPORT_EVERY_S = 1.0

# Called after each committed batch with its topic and number of records, and, with the
# topic None and 0 records, after an idle poll (at most every IDLE_REPORT_EVERY_S): the
# records each topic partition is behind, as far as known without asking the broker.
OnBatch = Callable[[str | None, int, Mapping[tuple[str, int], int]], None]


class _Moved(Exception):
    """A checkpoint is not where this follower left it: another writer (a rebuild, a
    second projector) moved it. Follow again from the checkpoints."""


def follow(
    log: EventLog,
    engine: Engine,
    should_stop: Callable[[], bool],
    on_batch: OnBatch | None = None,
    batch_size: int = BATCH_SIZE,
    poll_s: float = 0.1,
) -> ProjectionProgress:
    """Fold the log into the read models as it grows, until ``should_stop()``.

    Exactly once, as ``catch_up``: each batch's rows and its checkpoint are one
    transaction, so a kill at any moment loses or doubles nothing. On a log that can
    follow its partitions (Kafka: ``KafkaLog.follow``), one long-lived consumer hands
    records over as they arrive, from the checkpoints; on another (the embedded log, whose
    reads are local), a ``catch_up`` every ``poll_s`` seconds when idle. A store error
    propagates (the caller retries; the checkpoints say where to go on).
    """
    if not isinstance(log, Followable):
        return _poll(log, engine, should_stop, on_batch, batch_size, poll_s)
    progress = ProjectionProgress()
    while not should_stop():
        _follow_once(
            log,
            log,
            engine,
            should_stop,
            on_batch,
            batch_size,
            max(1, round(poll_s * 1000)),
            progress,
        )
    return progress


def _poll(
    log: EventLog,
    engine: Engine,
    should_stop: Callable[[], bool],
    on_batch: OnBatch | None,
    batch_size: int,
    poll_s: float,
) -> ProjectionProgress:
    progress = ProjectionProgress()
    projector = projector_name(log)
    while not should_stop():
        done = catch_up(log, engine, batch_size)
        progress.events += done.events
        progress.batches += done.batches
        for topic, n in done.by_topic.items():
            progress.by_topic[topic] = progress.by_topic.get(topic, 0) + n
        if on_batch is not None:
            # Reading where a partition ends is local and cheap on this log.
            ends = {at: log.end_offset(*at) for at in _source_partitions(log)}
            with engine.connect() as conn:
                folded = checkpoints_of(conn, projector)
            lags = {at: max(0, end - folded.get(at, 0)) for at, end in ends.items()}
            for topic, n in done.by_topic.items():
                on_batch(topic, n, lags)
            if not done.by_topic:
                on_batch(None, 0, lags)
        if not done.events:
            time.sleep(poll_s)
    return progress


def _source_partitions(log: EventLog) -> list[tuple[str, int]]:
    available = set(log.topic_names())
    return [
        (topic, partition)
        for topic in SOURCE_TOPICS
        if topic in available
        for partition in range(log.partitions(topic))
    ]


def _follow_once(
    log: EventLog,
    following: Followable,
    engine: Engine,
    should_stop: Callable[[], bool],
    on_batch: OnBatch | None,
    batch_size: int,
    poll_ms: int,
    progress: ProjectionProgress,
) -> None:
    """Follow from the checkpoints until a stop, a change of topics or partitions (the
    caller follows again, the new ones included), or a checkpoint moved by another writer."""
    projector = projector_name(log)
    partitions = _source_partitions(log)
    with engine.connect() as conn:
        folded = checkpoints_of(conn, projector)
    # Where each partition's checkpoint is, as far as this follower knows; every write
    # checks it in its transaction.
    reached = {at: folded.get(at, 0) for at in partitions}
    stream = following.follow(reached, poll_ms)
    try:
        now = time.monotonic()
        next_look = now + TOPOLOGY_EVERY_S
        last_report = -IDLE_REPORT_EVERY_S
        for groups in stream:
            # The groups of one poll go in as few transactions as batch_size allows: one,
            # as a rule. Each transaction is a fixed cost (~1.5 ms on SQLite), and an order
            # result arrives with its signal, decision, order and portfolio state, one group
            # each: folded one transaction a group, the last waits for all the others.
            batch: list[Group] = []
            size = 0
            for topic, partition, first, values in groups:
                for at in range(0, len(values), batch_size):
                    chunk = values[at : at + batch_size]
                    if batch and size + len(chunk) > batch_size:
                        _fold(engine, projector, reached, batch, stream, progress, on_batch)
                        batch, size = [], 0
                    batch.append((topic, partition, first + at, chunk))
                    size += len(chunk)
            if batch:
                _fold(engine, projector, reached, batch, stream, progress, on_batch)
            if should_stop():
                return
            now = time.monotonic()
            if not groups and on_batch is not None and now - last_report >= IDLE_REPORT_EVERY_S:
                on_batch(None, 0, stream.lag())
                last_report = now
            if now >= next_look:
                if _source_partitions(log) != partitions:
                    return
                next_look = now + TOPOLOGY_EVERY_S
    except _Moved:
        return
    finally:
        stream.close()


def _fold(
    engine: Engine,
    projector: str,
    reached: dict[tuple[str, int], int],
    batch: list[Group],
    stream: LogStream,
    progress: ProjectionProgress,
    on_batch: OnBatch | None,
) -> None:
    """Write the batch's groups and their checkpoints in one transaction, if each
    checkpoint is still where this follower left it (a group past it, after offsets the
    broker no longer has, is fine: ``catch_up`` folds on from there too)."""
    rows = [
        rows_of(projector, topic, partition, range(first, first + len(values)), values)
        for topic, partition, first, values in batch
    ]
    with engine.begin() as conn:
        stored = checkpoints_of(conn, projector)
        if any(stored.get((t, p), 0) != reached[(t, p)] for t, p, _, _ in batch):
            raise _Moved  # rolls the transaction back: nothing written
        write_batches(conn, rows)
    for topic, partition, first, values in batch:
        reached[(topic, partition)] = first + len(values)
        progress.events += len(values)
        progress.by_topic[topic] = progress.by_topic.get(topic, 0) + len(values)
    progress.batches += 1
    if on_batch is not None:
        lags = stream.lag()
        for topic, _, _, values in batch:
            on_batch(topic, len(values), lags)
