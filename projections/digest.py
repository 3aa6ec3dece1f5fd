"""``projection_digest``: one sha256 over the read models, backend-independent.

Tables in name order; within a table, rows in primary-key order; each row as the JSON
array of its column values. Checkpoints are not part of it: they say where a projector
is, not what the log means.

Rows are streamed in primary-key order from the database rather than sorted here: a
backtest's candles alone are a million rows. Text keys are ordered by code point on every
backend (SQLite's default BINARY collation; ``COLLATE "C"`` on Postgres, whose default
collation may follow a locale), which is the order Python gives strings too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import Boolean, Engine, String, Table

from projections.tables import READ_MODELS
from runtime.collector import collector_paused

FETCH_ROWS = 10_000


def _select(table: Table, dialect: str, quote: Any, by_run: bool) -> str:
    text_order = ' COLLATE "C"' if dialect == "postgresql" else ""
    columns = ", ".join(quote(c.name) for c in table.columns)
    order = ", ".join(
        quote(c.name) + (text_order if isinstance(c.type, String) else "")
        for c in table.primary_key.columns
    )
    where = ""
    if by_run:
        where = " WHERE run_id = " + ("%s" if dialect == "postgresql" else "?")
    return f"SELECT {columns} FROM {quote(table.name)}{where} ORDER BY {order}"


def _with_booleans(row: tuple[Any, ...], flags: list[int]) -> list[Any]:
    values = list(row)
    for i in flags:
        if values[i] is not None:
            values[i] = bool(values[i])
    return values


def projection_digest(
    engine: Engine,
    run_id: str | None = None,
    known: Mapping[str, tuple[int, str]] | None = None,
) -> str:
    """The digest of the read models (of ``run_id``'s rows, if given). ``known``: tables
    whose row count and hash of the run's rows the caller has already made from the rows
    it committed (a backtest's candles, see ``projections.candle_sink``); they are not
    read back."""
    with collector_paused():  # millions of short-lived row tuples
        return _digest(engine, run_id, known if run_id is not None and known else {})


def _digest(engine: Engine, run_id: str | None, known: Mapping[str, tuple[int, str]]) -> str:
    outer = hashlib.sha256()
    dialect = engine.dialect.name
    quote = engine.dialect.identifier_preparer.quote
    with engine.connect() as conn:
        raw: Any = conn.connection.driver_connection
        for table in sorted(READ_MODELS, key=lambda t: t.name):
            columns = ",".join(c.name for c in table.columns)
            if table.name in known:
                count, hexdigest = known[table.name]
                outer.update(f"{table.name}\t{columns}\t{count}\t{hexdigest}\n".encode())
                continue
            sql = _select(table, dialect, quote, run_id is not None)
            # A server-side cursor on Postgres, so the rows stream instead of piling up.
            cursor = raw.cursor(name="cdb_digest") if dialect == "postgresql" else raw.cursor()
            try:
                cursor.execute(sql, (run_id,) if run_id is not None else ())
                inner = hashlib.sha256()
                update, dumps = inner.update, orjson.dumps
                count = 0
                flags = [i for i, c in enumerate(table.columns) if isinstance(c.type, Boolean)]
                while rows := cursor.fetchmany(FETCH_ROWS):
                    count += len(rows)
                    if flags and dialect == "sqlite":
                        rows = [_with_booleans(row, flags) for row in rows]  # stored as 0/1
                    # Rows are tuples: orjson writes them as the same JSON arrays as lists.
                    # Each is hashed at once: orjson hands out a fresh buffer per value, and
                    # holding thousands of them (a join) costs more than the hashing.
                    for row in rows:
                        update(dumps(row))
                        update(b"\n")
            finally:
                cursor.close()
            outer.update(f"{table.name}\t{columns}\t{count}\t{inner.hexdigest()}\n".encode())
        conn.rollback()
    return outer.hexdigest()
