"""A damaged SQLite read-model file: recognised, and moved aside for a fresh one.

The read models are disposable (every row is a fold of the log), so a SQLite file that is
not a database, or is malformed, is not repaired: it is moved aside, never deleted, and a
fresh store takes its place, which the projector refills from the log.

Guarantees:

1. Only SQLite's own word counts as damage: ``SQLITE_CORRUPT`` ("database disk image is
   malformed") and ``SQLITE_NOTADB`` ("file is not a database"), or what ``PRAGMA
   quick_check`` or ``integrity_check`` reports. "database is locked" and every other
   error is not damage.
2. Only a SQLite file is ever moved: never an in-memory database, never Postgres.
3. Nothing is deleted: the file and its ``-wal``, ``-shm`` and ``-journal`` companions go to
   ``NAME.corrupt-N`` (the first N free), companions first, so no stale write-ahead log is
   ever replayed into the fresh file; one warning line on stderr says where.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

from sqlalchemy import Engine

# SQLite's primary result codes for a damaged file (extended codes share the low byte).
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
# The files beside a SQLite database that belong to it; moved first (see guarantee 3).
_COMPANIONS = ("-wal", "-shm", "-journal")


class DamagedStore(Exception):
    """``PRAGMA quick_check`` or ``integrity_check`` found the file damaged; the message
    says how."""


def sqlite_file(engine: Engine) -> Path | None:
    """The file behind a SQLite engine; None for anything else (Postgres, ``:memory:``)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def damage_of(exc: BaseException) -> str | None:
    """What the damage is, if ``exc`` (or the DB-API error inside it) says a SQLite file is
    damaged; None for any other error."""
    if isinstance(exc, DamagedStore):
        return str(exc)
    error = getattr(exc, "orig", None) or exc
    if not isinstance(error, sqlite3.DatabaseError):
        return None
    code = getattr(error, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return None
    return (str(error).splitlines() or ["damaged"])[0]


def check_file(engine: Engine, *, thorough: bool = False) -> None:
    """Read every page of the file (``PRAGMA quick_check``: the b-trees; ``thorough``:
    ``PRAGMA integrity_check``, the indexes against their tables too); raise
    ``DamagedStore``, or SQLite's own error, if it is damaged. About a second per 500 MB
    (twice that, thorough): only a rebuild, which reads the whole log anyway, or a
    recovery pays it."""
    pragma = "integrity_check" if thorough else "quick_check"
    with engine.connect() as conn:
        found = [row[0] for row in conn.exec_driver_sql(f"PRAGMA {pragma}").all()]
        conn.rollback()
    if found != ["ok"]:
        raise DamagedStore("; ".join(str(line) for line in found[:3]) or f"{pragma} failed")


def set_aside(engine: Engine, reason: str) -> Path:
    """Move ``engine``'s damaged SQLite file and its companions to ``NAME.corrupt-N`` and
    say so in one line on stderr; the next connection starts a fresh, empty file. The
    caller holds the store's migration lock, so no two processes do this at once."""
    path = sqlite_file(engine)
    if path is None:
        raise ValueError("only a SQLite file is ever set aside")
    engine.dispose()  # this process's connections let go of the damaged file
    number = 1
    while any(Path(f"{path}.corrupt-{number}{s}").exists() for s in ("", *_COMPANIONS)):
        number += 1
    aside = Path(f"{path}.corrupt-{number}")
    for suffix in (*_COMPANIONS, ""):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, f"{aside}{suffix}")
    sys.stderr.write(
        f"cdb: warning: {path} is damaged ({reason}); moved aside to {aside}; the read "
        "models are folded again from the log\n"
    )
    sys.stderr.flush()
    return aside
