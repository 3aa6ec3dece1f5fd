"""Rebuilding the read models from offset zero (``cdb projections rebuild``).

Readers never see a half-built table. On SQLite the tables are refilled in one transaction
(readers keep seeing the old rows until it commits). On Postgres every table is built
beside the live one, as a shadow table without keys or indexes, indexed once complete,
and all shadows take the live tables' places in one final transaction.

On Postgres a large log is folded by several processes at once: topics that write the same
tables (orders, their results and the portfolio states that complete the fills) stay
together, and each group goes to the least loaded worker. Each worker reads the log itself,
folds its topics into its shadows in its own transaction and commits them indexed; the
parent swaps them in with the checkpoints and dead letters the workers report. A failing
worker fails the rebuild and its shadows are dropped; the live tables are never touched
before the swap.

Several logs may share a store (checkpoints are per log, ``projector_name``). A rebuild of
a log replaces the rows of that log's runs and keeps every other row. Its runs: those its
``runs`` topic holds (every run writes its metadata there first), those the store records
as projected from it (``projected_runs``), and any other run it folds rows of (a run id
belongs to one log). Only its own checkpoints and ``projected_runs`` rows are replaced.

- SQLite: the rows of those runs are deleted and refolded in one transaction, begun as the
  writer (SQLite has one at a time, so no other projector commits in between); a table
  that holds no other run is emptied at once.
- Postgres: the shadows hold this log's rows only. The transaction that swaps them in
  first locks the live tables (``store.lock_for_swap``): every projector writing to them
  has committed, every later one waits for the swap. Then, table by table, the live rows
  of every other run (those other logs' projectors committed while the rebuild ran
  included) are kept: copied into the shadow, which is swapped in; or, where they are
  more than the shadow's rows, left where they are, this log's live rows deleted and the
  shadow's inserted. Chosen over deleting and refolding the runs in the live tables from
  the start (what SQLite does) because the fold keeps what makes it fast (COPY into
  tables without indexes, indexes built once, parallel workers) whatever else the store
  holds, and the rows other projectors commit meanwhile are in the live tables when they
  are locked. Sharing costs a copy of the smaller side while the tables are locked; the
  common case, one log per store, keeps nothing (finding that out costs one index probe
  per run and table).

Rebuilds of one store take turns (``store.rebuild_lock``): a second waits for the first,
then runs. A damaged SQLite file is moved aside and the rebuild made into a fresh one
(``projections.sqlite_damage``); the rebuild checks the whole file first.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, select

from projections import tables
from projections.projector import (
    BATCH_SIZE,
    ROW_MAPS,
    SOURCE_TOPICS,
    BatchRows,
    ProjectionError,
    ProjectionProgress,
    Row,
    Values,
    checkpoint_row,
    checkpoints_of,
    key_of,
    projector_name,
    rows_of,
    run_ids_of,
    value_batches,
    write_rows,
)
from projections.sqlite_damage import check_file, damage_of, sqlite_file
from projections.store import (
    add_primary_key,
    append_values,
    begin_writing,
    connect_store,
    copy_runs_into_shadow,
    create_shadow,
    delete_runs,
    drop_shadows,
    fewer_kept_than_rebuilt,
    index_shadow,
    lock_for_swap,
    rebuild_lock,
    refill_from_shadow,
    replace_damaged,
    run_ids_in,
    swap_in,
    upsert,
    upsert_values,
)
from projections.tables import READ_MODELS
from runtime.collector import collector_paused
from streams import topics
from streams.log_port import EventLog

# From this many records on, a Postgres rebuild is folded by several processes.
PARALLEL_FROM = 200_000
REBUILD_WORKERS = 2


# Tables whose rows later events complete (an order by its result, a fill by the position
# state that follows it, a run by its completion, a position by every fill): see
# projector.ROW_MAPS.
_COMPLETED_LATER = frozenset({"orders", "trades", "runs", "positions"})
HELD_ROWS = 500_000


Columns = tuple[str, ...]


class _Merge:
    """How a row given as ``earlier`` columns takes a later part given as ``later`` columns:
    the columns of both, each valued from the later part if it has it, as a later upsert
    would; computed once per pair, then applied to the two value tuples in one call."""

    __slots__ = ("columns", "pick")

    def __init__(self, earlier: Columns, later: Columns) -> None:
        self.columns: Columns = earlier + tuple(c for c in later if c not in earlier)
        position = {c: i for i, c in enumerate(earlier)}
        position.update({c: len(earlier) + i for i, c in enumerate(later)})
        self.pick = itemgetter(*(position[c] for c in self.columns))


class _HeldRows:
    """During a rebuild, rows of ``_COMPLETED_LATER`` tables are merged here, in fold order,
    and written once complete: one COPY of finished rows instead of a COPY of new rows and a
    merge of every update into them. Past ``limit`` rows the held ones are written early,
    and whatever later events add to them is merged by the store as usual."""

    def __init__(self, limit: int | None = None) -> None:
        self._limit = HELD_ROWS if limit is None else limit
        # Per table and key: the row's columns and values so far.
        self._rows: dict[Table, dict[Any, tuple[Columns, Values]]] = {}
        self._merges: dict[tuple[int, int], _Merge] = {}
        self._count = 0

    def _merge(self, earlier: Columns, later: Columns) -> _Merge:
        # Column tuples are long-lived (row maps, merges): their ids name them cheaply.
        merge = self._merges.get((id(earlier), id(later)))
        if merge is None:
            merge = self._merges[(id(earlier), id(later))] = _Merge(earlier, later)
        return merge

    def take(self, batch: BatchRows) -> BatchRows:
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
                    held[row_key] = (columns, values)
                    self._count += 1
                elif existing[0] is columns:
                    held[row_key] = (columns, values)  # the same columns: the later wins
                else:
                    merge = self._merge(existing[0], columns)
                    held[row_key] = (merge.columns, merge.pick(existing[1] + values))
        return BatchRows(passed, batch.dead, batch.checkpoint)

    def full(self) -> bool:
        return self._count >= self._limit

    def release(self, *, complete: bool, table: Table | None = None) -> BatchRows:
        """The held rows (of ``table`` only, if given), grouped by table and columns, and
        forgotten here; ``complete`` when no later event can add to them."""
        groups: dict[tuple[Table, Columns], list[Values]] = {}
        for held_table in [table] if table is not None else list(self._rows):
            held = self._rows.pop(held_table, {})
            self._count -= len(held)
            for columns, values in held.values():
                group = groups.get((held_table, columns))
                if group is None:
                    group = groups[(held_table, columns)] = []
                group.append(values)
        return BatchRows(
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
    """Where a rebuild writes on SQLite: the tables themselves, the rows of the runs it
    replaces deleted first (readers keep seeing the old rows until the commit), those of
    every other run left as they are."""

    def __init__(self, conn: Connection, targets: Iterable[Table], replaced: Iterable[str]) -> None:
        self._conn = conn
        self._targets = list(targets)
        self._replaced = set(replaced)
        for table in self._targets:
            present = run_ids_in(conn, table)
            mine = [run_id for run_id in present if run_id in self._replaced]
            if len(mine) == len(present):
                conn.execute(delete(table))  # all of them (SQLite truncates: no row by row)
            else:
                delete_runs(conn, table, mine)

    def replace(self, run_ids: set[str]) -> None:
        """The fold has reached rows of ``run_ids``: they are this log's (a run id belongs
        to one log), so whatever rows of theirs the tables hold are deleted before any is
        written. Most runs are known from the start (their metadata); this catches the
        others (a log holding events of a run without its metadata)."""
        fresh = sorted(run_ids - self._replaced)
        if fresh:
            for table in self._targets:
                delete_runs(self._conn, table, fresh)
            self._replaced.update(fresh)

    def write(self, batch: BatchRows) -> None:
        write_rows(self._conn, batch)

    def complete(self, table: Table) -> None:
        """No more rows will come for ``table``."""

    def finish(self) -> None:
        """Every row has been written; stop writing."""

    def close(self) -> None:
        """Stop writing (after ``finish``, or on a failure)."""


class _Shadows(_Rebuilt):
    """Where a rebuild writes on Postgres: a shadow beside each table refolded, indexed once
    complete (``store.create_shadow``, ``store.index_shadow``).

    A second thread writes, in order, on the rebuild's connection, while the caller decodes
    the next batches: Postgres takes a COPY, or builds the indexes of a table just
    completed, while this process decodes (the thread waits on the server with the GIL
    released). Rows are appended to shadows without a key. Only where rows are written
    before they are complete (held rows released early) a shadow gets its key at once, so
    the rest can be merged into them.
    """

    def __init__(self, conn: Connection, targets: Iterable[Table]) -> None:
        self._conn = conn
        self._tables = {table: create_shadow(conn, table) for table in targets}
        self._keyed: set[Table] = set()
        self._indexed: set[Table] = set()
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

    def write(self, batch: BatchRows) -> None:
        self._submit(functools.partial(self._write_now, batch))

    def _write_now(self, batch: BatchRows) -> None:
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

    def replace(self, run_ids: set[str]) -> None:
        """Shadows start empty; which live rows they replace is settled at the swap."""

    def complete(self, table: Table) -> None:
        self._indexed.add(table)
        self._submit(functools.partial(index_shadow, self._conn, table))

    def finish(self) -> None:
        self.close()  # every job done (or the writer's failure raised)
        for table in self._tables:
            if table not in self._indexed:
                index_shadow(self._conn, table)

    def close(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


# The topics to fold, and to which offset in each partition (None: the end).
Plan = list[tuple[str, list[tuple[int, int | None]]]]


class _Folder:
    """Folds whole topics, in order, into the tables of a rebuild, in one transaction.

    ``replaced``: the runs whose rows the rebuild replaces, as far as known before it
    folds (on SQLite they are deleted first); every run it folds rows of is added to them
    (``run_ids``)."""

    def __init__(
        self,
        conn: Connection,
        projector: str,
        targets: list[Table],
        projection: str | None,
        batch_size: int,
        replaced: Iterable[str] = (),
    ) -> None:
        self._shadows = conn.dialect.name == "postgresql"
        self._into: _Rebuilt = (
            _Shadows(conn, targets) if self._shadows else _Rebuilt(conn, targets, replaced)
        )
        self._projector = projector
        self._targets = targets
        self._projection = projection
        self._batch_size = batch_size
        self._held = _HeldRows()
        self._read: set[str] = set()
        self.progress = ProjectionProgress()
        self.checkpoints: list[Row] = []
        self.dead: list[Row] = []
        self.projected: list[Row] = []
        self.run_ids: set[str] = set()

    def fold(self, log: EventLog, plan: Plan) -> None:
        try:
            for topic, partitions in plan:
                for partition, end in partitions:
                    self._fold_partition(log, topic, partition, end)
                self._read.add(topic)
                for table in self._targets:
                    if topic in FEEDING_TOPICS[table] and FEEDING_TOPICS[table] <= self._read:
                        self._into.write(self._held.release(complete=True, table=table))
                        self._into.complete(table)
            self._into.write(self._held.release(complete=True))
            self._into.finish()
        finally:
            self._into.close()

    def _fold_partition(self, log: EventLog, topic: str, partition: int, end: int | None) -> None:
        next_offset = 0
        for offsets, values in value_batches(log, topic, partition, 0, end, self._batch_size):
            rows = rows_of(
                self._projector,
                topic,
                partition,
                offsets,
                values,
                self._projection,
                # One transaction: only the last position of each partition counts.
                checkpoint_to=False,
                # Shadows resolve keys when they are indexed.
                distinct_keys=not self._shadows,
            )
            self.dead.extend(rows.dead)
            self.projected.extend(rows.projected)
            folded = run_ids_of(rows)
            if not folded <= self.run_ids:
                self.run_ids.update(folded)
                self._into.replace(folded)
            self._into.write(self._held.take(rows))
            if self._held.full():
                self._into.write(self._held.release(complete=False))
            next_offset = offsets[-1] + 1
            self.progress.events += len(values)
            self.progress.batches += 1
        if self._projection is None and next_offset:
            self.checkpoints.append(checkpoint_row(self._projector, topic, partition, next_offset))


def _plan(
    log: EventLog, targets: list[Table], reached: Mapping[tuple[str, int], int], only: bool
) -> tuple[Plan, dict[str, int]]:
    """What to fold: every source topic that writes a target, each partition to the end (to
    the checkpoints reached when refolding ``only`` one table, so it matches the others);
    and the records in each topic."""
    available = set(log.topic_names())
    feeding = set().union(*(FEEDING_TOPICS[table] for table in targets))
    plan: Plan = []
    sizes: dict[str, int] = {}
    for topic in SOURCE_TOPICS:
        if topic not in feeding:
            continue
        partitions: list[tuple[int, int | None]] = []
        sizes[topic] = 0
        for partition in range(log.partitions(topic)) if topic in available else ():
            end = reached.get((topic, partition), 0) if only else log.end_offset(topic, partition)
            if end:
                partitions.append((partition, end))
                sizes[topic] += end
        plan.append((topic, partitions))
    return plan, sizes


def _split(plan: Plan, sizes: Mapping[str, int], targets: list[Table], workers: int) -> list[Plan]:
    """``plan`` in up to ``workers`` parts of about equal size, topics that write a common
    table in the same part, each part in the plan's order."""
    group_of = {topic: topic for topic, _ in plan}

    def root(topic: str) -> str:
        while group_of[topic] != topic:
            topic = group_of[topic]
        return topic

    for table in targets:
        feeders = [t for t in FEEDING_TOPICS[table] if t in group_of]
        for other in feeders[1:]:
            group_of[root(other)] = root(feeders[0])
    groups: dict[str, list[str]] = {}
    for topic, _ in plan:
        groups.setdefault(root(topic), []).append(topic)
    loads = [0] * workers
    parts: list[set[str]] = [set() for _ in range(workers)]
    for members in sorted(groups.values(), key=lambda m: -sum(sizes[t] for t in m)):
        lightest = loads.index(min(loads))
        parts[lightest].update(members)
        loads[lightest] += sum(sizes[t] for t in members)
    return [[step for step in plan if step[0] in part] for part in parts if part]


def _tables_of(plan: Plan, targets: list[Table]) -> list[Table]:
    folded = {topic for topic, _ in plan}
    return [table for table in targets if FEEDING_TOPICS[table] & folded]


def rebuild(
    log: EventLog,
    engine: Engine,
    projection: str | None = None,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
) -> ProjectionProgress:
    """Refold read models from offset zero; readers see the old tables until it is done.

    Without ``projection`` all read models are refolded up to the end of the log, with new
    checkpoints; with it, only that table, up to the positions the other tables have
    reached, so it matches them. Only the rows of this log's runs are replaced (see the
    module docstring); every other log's stay. ``workers`` folding processes on Postgres
    (by default several for a log of ``PARALLEL_FROM`` records or more, if the log can be
    read from them); a failure leaves the old tables as they were. Rebuilds of one store
    take turns. A damaged SQLite file is moved aside and the rebuild made into a fresh one.
    """
    by_name = {table.name: table for table in READ_MODELS}
    if projection is not None and projection not in by_name:
        raise ProjectionError(
            f"unknown projection {projection!r} (projections: {', '.join(sorted(by_name))})"
        )
    targets = [by_name[projection]] if projection is not None else list(READ_MODELS)
    with collector_paused(), rebuild_lock(engine):
        try:
            return _rebuild(log, engine, targets, projection, batch_size, workers)
        except Exception as exc:
            reason = damage_of(exc)
            if reason is None or sqlite_file(engine) is None:
                raise
        replace_damaged(engine)
        return _rebuild(log, engine, targets, projection, batch_size, workers)


def _rebuild(
    log: EventLog,
    engine: Engine,
    targets: list[Table],
    projection: str | None,
    batch_size: int,
    workers: int | None,
) -> ProjectionProgress:
    if sqlite_file(engine) is not None:
        check_file(engine)  # a rebuild reads the whole log anyway; this reads the file
    projector = projector_name(log)
    with engine.connect() as conn:
        reached = checkpoints_of(conn, projector)
    logged = _logged_runs(log, projector)
    plan, sizes = _plan(log, targets, reached, projection is not None)
    if engine.dialect.name == "postgresql" and log.readable_after_fork:
        if workers is None:
            enough = sum(sizes.values()) >= PARALLEL_FROM
            workers = min(REBUILD_WORKERS, os.cpu_count() or 1) if enough else 1
        parts = _split(plan, sizes, targets, workers)
        if len(parts) > 1:
            return _rebuild_in_workers(log, engine, projector, targets, parts, batch_size, logged)
    return _rebuild_here(log, engine, projector, targets, projection, plan, batch_size, logged)


def _logged_runs(log: EventLog, projector: str) -> set[str]:
    """The runs the log's ``runs`` topic holds: every run writes its metadata there first,
    so these are the log's runs (a small topic: two records a run)."""
    if topics.RUNS not in log.topic_names():
        return set()
    found: set[str] = set()
    for partition in range(log.partitions(topics.RUNS)):
        end = log.end_offset(topics.RUNS, partition)
        for offsets, values in value_batches(log, topics.RUNS, partition, 0, end, BATCH_SIZE):
            rows = rows_of(
                projector, topics.RUNS, partition, offsets, values, "runs", checkpoint_to=False
            )
            found |= run_ids_of(rows)
    return found


def _projected_runs(conn: Connection, projector: str) -> set[str]:
    """The runs ``projector`` has folded the metadata of, as recorded in the store."""
    column = tables.projected_runs.c
    return set(conn.execute(select(column.run_id).where(column.projector == projector)).scalars())


def _rebuild_here(
    log: EventLog,
    engine: Engine,
    projector: str,
    targets: list[Table],
    projection: str | None,
    plan: Plan,
    batch_size: int,
    logged: set[str],
) -> ProjectionProgress:
    """One process, one transaction."""
    with engine.begin() as conn:
        begin_writing(conn)
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            drop_shadows(conn, targets)
            folder = _Folder(conn, projector, targets, projection, batch_size)
        else:
            replaced = logged | _projected_runs(conn, projector)
            folder = _Folder(conn, projector, targets, projection, batch_size, replaced)
        folder.fold(log, plan)
        swapped = []
        if postgres:
            swapped = _keep_other_runs(conn, projector, targets, logged | folder.run_ids)
        _conclude(conn, projector, projection, folder.checkpoints, folder.dead, folder.projected)
        for table in swapped:
            swap_in(conn, table)
    return folder.progress


def _keep_other_runs(
    conn: Connection, projector: str, targets: list[Table], replaced: set[str]
) -> list[Table]:
    """Settle each table of a Postgres rebuild, in the transaction that swaps them in, and
    return those whose shadows are to take the live tables' places.

    First the live tables are locked (every writer before has committed, every later one
    waits for the swap). Then the live rows of every run this rebuild does not replace
    (other logs' runs, those their projectors committed while it ran included) are kept:
    copied into the shadow, or, where they outnumber the shadow's rows, kept where they
    are while this log's rows in the live table are replaced by the shadow's. The common
    case, one log per store, keeps nothing and swaps every table."""
    lock_for_swap(conn, targets)
    replaced = replaced | _projected_runs(conn, projector)
    swapped = []
    for table in targets:
        kept = [run_id for run_id in run_ids_in(conn, table) if run_id not in replaced]
        if not kept:
            swapped.append(table)
        elif fewer_kept_than_rebuilt(conn, table, kept):
            copy_runs_into_shadow(conn, table, kept)
            swapped.append(table)
        else:
            refill_from_shadow(conn, table, kept)
    return swapped


def _conclude(
    conn: Connection,
    projector: str,
    projection: str | None,
    checkpoints: list[Row],
    dead: list[Row],
    projected: list[Row],
) -> None:
    """The positions reached and the runs folded (for a full rebuild: this log's, and only
    this log's, replaced), and the records no model accepted."""
    if projection is None:
        conn.execute(delete(tables.checkpoints).where(tables.checkpoints.c.projector == projector))
        upsert(conn, tables.checkpoints, checkpoints)
        runs = tables.projected_runs
        conn.execute(delete(runs).where(runs.c.projector == projector))
        upsert(conn, runs, list({row["run_id"]: row for row in projected}.values()))
    upsert(conn, tables.projection_dead_letters, dead)


def _rebuild_in_workers(
    log: EventLog,
    engine: Engine,
    projector: str,
    targets: list[Table],
    parts: list[Plan],
    batch_size: int,
    logged: set[str],
) -> ProjectionProgress:
    url = engine.url.render_as_string(hide_password=False)
    # Forked: the workers start at once, with the log and the code as they are here. They
    # leave the connections they inherit alone (and exit without finalising them).
    context = multiprocessing.get_context("fork")
    running: list[tuple[Any, Any]] = []
    try:
        with engine.begin() as conn:
            drop_shadows(conn, targets)
        for part in parts:
            receiver, sender = context.Pipe(duplex=False)
            worker = context.Process(
                target=_worker,
                args=(log, url, projector, _tables_of(part, targets), part, batch_size, sender),
                name="cdb-rebuild-worker",
                daemon=True,
            )
            worker.start()
            sender.close()
            running.append((worker, receiver))
        progress = ProjectionProgress()
        checkpoints: list[Row] = []
        dead: list[Row] = []
        projected: list[Row] = []
        folded: set[str] = set()
        for worker, receiver in running:
            try:
                outcome, *details = receiver.recv()
            except EOFError:
                worker.join()
                raise ProjectionError(
                    f"a rebuild worker died (exit code {worker.exitcode})"
                ) from None
            if outcome != "done":
                raise ProjectionError(f"rebuild failed: {details[0]}")
            part_progress, part_checkpoints, part_dead, part_projected, part_runs = details
            progress.events += part_progress.events
            progress.batches += part_progress.batches
            checkpoints += part_checkpoints
            dead += part_dead
            projected += part_projected
            folded |= part_runs
        with engine.begin() as conn:
            swapped = _keep_other_runs(conn, projector, targets, logged | folded)
            _conclude(conn, projector, None, checkpoints, dead, projected)
            for table in swapped:
                swap_in(conn, table)
        return progress
    finally:
        for worker, receiver in running:
            receiver.close()
            if worker.is_alive():
                worker.terminate()
            worker.join()
        with engine.begin() as conn:
            drop_shadows(conn, targets)  # after a failure: what the workers committed


def _worker(
    log: EventLog,
    url: str,
    projector: str,
    targets: list[Table],
    plan: Plan,
    batch_size: int,
    report: Any,
) -> None:
    """A rebuild worker: folds ``plan`` into committed, indexed shadows and reports."""
    try:
        engine = connect_store(url)
        try:
            with engine.begin() as conn:
                folder = _Folder(conn, projector, targets, None, batch_size)
                folder.fold(log, plan)
        finally:
            engine.dispose()
        found = (folder.progress, folder.checkpoints, folder.dead, folder.projected)
        report.send(("done", *found, folder.run_ids))
    except BaseException as exc:  # reported to the parent, which raises it
        first_line = (str(exc).splitlines() or [""])[0]
        report.send(("failed", f"{type(exc).__name__}: {first_line}"))
    finally:
        report.close()
