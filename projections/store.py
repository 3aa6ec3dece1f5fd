"""The store behind the read models: SQLite by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, make_url, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

DATABASE_NAME = "claire_de_binare"  # R18: the database name, exactly


class StoreError(ValueError):
    """A store URL that cannot be used; the message is one line for the user."""


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir) / 'projections.sqlite'}"


def normalise_store_url(url: str) -> str:
    """SQLite as given; Postgres through psycopg 3, and only the database claire_de_binare."""
    if url.startswith("sqlite:"):
        return url
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            normalised = "postgresql+psycopg://" + url[len(prefix) :]
            database = make_url(normalised).database
            if database != DATABASE_NAME:
                raise StoreError(
                    f"the Postgres database must be named {DATABASE_NAME!r}, not {database!r}"
                )
            return normalised
    raise StoreError(f"not a store URL: {url!r} (expected sqlite:///FILE or postgresql://...)")


def open_store(url: str) -> Engine:
    """Create the engine and the schema (idempotent)."""
    engine = create_engine(normalise_store_url(url))
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    upgrade(engine)
    return engine


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "projections:migrations")
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Apply the schema migrations up to ``revision``; return the revision now current.

    Idempotent, and safe when several processes open the same store at once: upgraders
    take turns (an advisory lock on Postgres, a lock file beside a SQLite database), and
    whoever comes second finds the schema already there.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with _migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(7262019)"))
        command.upgrade(_alembic_config(connection), revision)
        current: str | None = MigrationContext.configure(connection).get_current_revision()
    return current


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    update_columns: Sequence[str] | None = None,
) -> None:
    """Insert ``rows``; on a primary-key clash overwrite ``update_columns`` (all by default).

    Rows of one call must have the same keys. Replaying an event rewrites the same values,
    so applying a batch twice leaves the tables as applying it once.
    """
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "sqlite":
        statement: Any = sqlite.insert(table)
    elif dialect == "postgresql":
        statement = postgresql.insert(table)
    else:
        raise ValueError(f"unsupported store dialect {dialect!r}")
    keys = [c.name for c in table.primary_key.columns]
    columns = (
        update_columns if update_columns is not None else [k for k in rows[0] if k not in keys]
    )
    if columns:
        statement = statement.on_conflict_do_update(
            index_elements=keys, set_={c: statement.excluded[c] for c in columns}
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=keys)
    conn.execute(statement, list(rows))


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "wb") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
