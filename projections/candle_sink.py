"""The candles read model, folded where a backtest's candles are written.

A backtest's candles are most of its events: decoding them back from the log only to
make rows of the very values the engine already had would double the cost of a run.
``CandleSink`` is handed each batch as it is appended (``streams.backtest``, in the
market-data process where there is one) and writes the batch's rows and the projector's
checkpoint in one transaction, exactly as the projector would have: the same rows, the
same checkpoint, so the digest is the same and ``catch_up`` simply finds the candles done.

It only ever continues the projector's position: if the checkpoint of the partition is not
where the batch begins (records before it are not folded yet), it stands down, and the
projector folds everything from its checkpoint as usual. Any failure does the same.

Its rows and checkpoints are written in one transaction that stays open until the log has
committed the candles (``commit``, called after the log's commit): the read models never
hold a candle the log does not. If the run dies first, the transaction is rolled back with
the connection, and the candles the log did commit are left to the projector.

It also hashes the rows it commits, exactly as ``projection_digest`` hashes the table (each
row as the JSON array of its values, in key order), so a backtest's digest need not read a
million rows back: ``report()`` gives the run's candle row count and hash, or None when
it cannot vouch for them (it stood down, the run had candle rows before it, or a symbol's
candles did not come in time order, or a later symbol sorts before the first). A test
holds the reported digest equal to the one read back from the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
from itertools import repeat
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select

from projections import tables
from projections.projector import checkpoint_in
from projections.store import connect_store, upsert, upsert_values
from streams import topics

# The columns of tables.candles, in the order the rows below give them.
CANDLE_COLUMNS = [c.name for c in tables.candles.columns]


def _json_lines(rows: list[tuple[Any, ...]]) -> bytes:
    """``orjson.dumps(row) + b"\\n"`` for every row, in one call: the array of the rows with
    its brackets taken off and each "],[" between rows made "]\\n[" (the caller makes sure
    no text value holds a bracket)."""
    return orjson.dumps(rows)[1:-1].replace(b"],[", b"]\n[") + b"\n"


class _RowsHash:
    """The ``projection_digest`` hash of one run's candle rows, made as they are committed.

    Rows are hashed in key order (symbol, interval, time). Each symbol's rows come in time
    order; the first symbol's are hashed at once, the others' kept until the end, when they
    follow it in key order (a run of one symbol keeps nothing).
    """

    def __init__(self) -> None:
        self._head: tuple[str, str] | None = None
        self._head_hash = hashlib.sha256()
        self._others: dict[tuple[str, str], list[bytes]] = {}
        self._last: dict[tuple[str, str], int] = {}
        self.count = 0
        self.valid = True

    def add(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows in the order of CANDLE_COLUMNS: run id, symbol, interval, time, ..."""
        symbols = {row[1] for row in rows}
        intervals = {row[2] for row in rows}
        if len(symbols) == 1 and len(intervals) == 1:
            streams = {(rows[0][1], rows[0][2]): rows}
        else:
            streams = {}
            for row in rows:
                streams.setdefault((row[1], row[2]), []).append(row)
        texts = {rows[0][0], *symbols, *intervals}
        if any("[" in text or "]" in text for text in texts):
            self.valid = False  # _json_lines could not tell rows apart
            return
        for stream, stream_rows in streams.items():
            stamps = [row[3] for row in stream_rows]
            previous = self._last.get(stream)
            in_order = all(map(operator.lt, stamps, stamps[1:]))
            if not in_order or (previous is not None and stamps[0] <= previous):
                self.valid = False
                return
            self._last[stream] = stamps[-1]
            chunk = _json_lines(stream_rows)
            if self._head is None:
                self._head = stream
            if stream == self._head:
                self._head_hash.update(chunk)
            else:
                self._others.setdefault(stream, []).append(chunk)
            self.count += len(stream_rows)

    def hexdigest(self) -> str | None:
        if not self.valid or self._head is None or any(s < self._head for s in self._others):
            return None
        inner = self._head_hash.copy()
        for stream in sorted(self._others):
            for chunk in self._others[stream]:
                inner.update(chunk)
        return inner.hexdigest()


# Candle batches the sink gathers before writing them in one transaction.
SINK_ROWS = 16_384

Batch = tuple[str, int, int, int, tuple[tuple[Any, ...], ...]]


class CandleSink:
    def __init__(self, store_url: str, projector: str) -> None:
        self._url = store_url
        self._projector = projector
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._hash = _RowsHash()
        self._first = True
        self._pending: list[Batch] = []
        self._pending_rows = 0
        self.standing_down = False

    def report(self) -> dict[str, tuple[int, str]] | None:
        """``{"candles": (rows, hash)}`` of the run's candle rows, for ``projection_digest``,
        once every batch handed over is written; None if this sink cannot vouch for all."""
        self.flush()
        digest = None if self.standing_down else self._hash.hexdigest()
        return None if digest is None else {tables.candles.name: (self._hash.count, digest)}

    def __call__(
        self,
        run_id: str,
        partition: int,
        first_offset: int,
        first_sequence: int,
        columns: tuple[tuple[Any, ...], ...],
    ) -> None:
        if self.standing_down or not columns:
            return
        if self._pending:
            last_run, last_partition, last_offset, _, last_columns = self._pending[-1]
            follows = (run_id, partition) == (last_run, last_partition) and first_offset == (
                last_offset + len(last_columns[1])
            )
            if not follows:
                self.flush()
        self._pending.append((run_id, partition, first_offset, first_sequence, columns))
        self._pending_rows += len(columns[1])
        if self._pending_rows >= SINK_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the batches gathered so far, with the checkpoint, in the open transaction."""
        pending, self._pending, self._pending_rows = self._pending, [], 0
        if self.standing_down or not pending:
            return
        try:
            self._write(pending)
        except Exception:
            # Nothing half-written (one transaction); the projector folds from its checkpoint.
            self.standing_down = True
            self.close()

    def _write(self, batches: list[Batch]) -> None:
        run_id, partition, first_offset = batches[0][:3]
        if self._conn is None:
            # Opened in the process that calls (a forked child has a connection of its own).
            self._engine = connect_store(self._url)
            self._conn = self._engine.connect()
            self._conn.begin()
        conn = self._conn
        rows: list[tuple[Any, ...]] = []
        for _, _, _, first_sequence, columns in batches:
            symbols, stamps, opens, highs, lows, closes, volumes, intervals = columns[:8]
            sequences = range(first_sequence, first_sequence + len(stamps))
            # Zipped in C, in the order of CANDLE_COLUMNS: a million rows a run.
            rows.extend(
                zip(
                    repeat(run_id),
                    *(symbols, intervals, stamps, sequences, opens, highs, lows, closes, volumes),
                    strict=False,  # repeat() is endless; the columns have one length
                )
            )
        if checkpoint_in(conn, self._projector, topics.MARKET_DATA, partition) != first_offset:
            self.standing_down = True
            self.close()
            return
        if self._first:
            self._first = False
            earlier = conn.execute(
                select(tables.candles.c.run_id).where(tables.candles.c.run_id == run_id).limit(1)
            ).first()
            self._hash.valid = earlier is None
        upsert_values(conn, tables.candles, CANDLE_COLUMNS, rows)
        upsert(
            conn,
            tables.checkpoints,
            [
                {
                    "projector": self._projector,
                    "topic": topics.MARKET_DATA,
                    "partition": partition,
                    "next_offset": first_offset + len(rows),
                }
            ],
        )
        if self._hash.valid:
            self._hash.add(rows)

    def commit(self) -> None:
        """The log has committed the candles: commit their rows and checkpoint. A sink
        that stood down has nothing to commit (the projector folds the candles)."""
        if self._conn is not None and not self.standing_down:
            try:
                self._conn.commit()
            except Exception:
                self.standing_down = True  # rolled back: the projector folds them instead
        self.close()

    def close(self) -> None:
        """Let go of the store; rows not committed are rolled back and left to the
        projector."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # rolls back an open transaction
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
