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
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from projections import tables
from projections.projector import checkpoint_in
from projections.store import connect_store, upsert, upsert_values
from streams import topics

# The columns of tables.candles, in the order the rows below give them.
CANDLE_COLUMNS = [c.name for c in tables.candles.columns]


class CandleSink:
    def __init__(self, store_url: str, projector: str) -> None:
        self._url = store_url
        self._projector = projector
        self._engine: Engine | None = None
        self.standing_down = False

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
        try:
            self._write(run_id, (partition, first_offset), first_sequence, columns)
        except Exception:
            # Nothing half-written (one transaction); the projector folds from its checkpoint.
            self.standing_down = True
            self.close()

    def _write(
        self,
        run_id: str,
        at: tuple[int, int],
        first_sequence: int,
        columns: tuple[tuple[Any, ...], ...],
    ) -> None:
        partition, first_offset = at
        if self._engine is None:
            # Opened in the process that calls (a forked child has a connection of its own).
            self._engine = connect_store(self._url)
        symbols, stamps, opens, highs, lows, closes, volumes, intervals = columns[:8]
        rows = [
            (run_id, symbol, interval, ts, first_sequence + i, o, h, lo, c, v)
            for i, (symbol, ts, o, h, lo, c, v, interval) in enumerate(
                zip(symbols, stamps, opens, highs, lows, closes, volumes, intervals, strict=True)
            )
        ]
        with self._engine.begin() as conn:
            if checkpoint_in(conn, self._projector, topics.MARKET_DATA, partition) != first_offset:
                self.standing_down = True
                return
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

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
