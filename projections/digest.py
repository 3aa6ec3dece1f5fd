"""``projection_digest``: one sha256 over the read models, backend-independent.

Tables in name order; within a table, rows in primary-key order; each row as the JSON
array of its column values. Checkpoints are not part of it: they say where a projector
is, not what the log means.
"""

from __future__ import annotations

import hashlib

import orjson
from sqlalchemy import Engine, select

from projections.tables import READ_MODELS


def projection_digest(engine: Engine, run_id: str | None = None) -> str:
    outer = hashlib.sha256()
    with engine.connect() as conn:
        for table in sorted(READ_MODELS, key=lambda t: t.name):
            query = select(table)
            if run_id is not None:
                query = query.where(table.c.run_id == run_id)
            # Sorted here, not by the database: string order depends on its collation.
            keys = [table.c.keys().index(c.name) for c in table.primary_key.columns]
            rows = sorted(
                (tuple(row) for row in conn.execute(query)),
                key=lambda row: tuple(row[i] for i in keys),
            )
            inner = hashlib.sha256()
            for row in rows:
                inner.update(orjson.dumps(list(row)))
                inner.update(b"\n")
            count = len(rows)
            columns = ",".join(c.name for c in table.columns)
            outer.update(f"{table.name}\t{columns}\t{count}\t{inner.hexdigest()}\n".encode())
    return outer.hexdigest()
