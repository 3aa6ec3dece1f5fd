"""The store behind the read models: SQLite by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Engine, MetaData, Table, create_engine, event, make_url, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection

from projections.sqlite_damage import check_file, damage_of, set_aside, sqlite_file

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


def create_database(server_url: str) -> str:
    """Create the database claire_de_binare on the Postgres server at ``server_url`` if it
    is not there; return ``server_url`` pointed at it (for fixtures and benchmarks)."""
    url = make_url(server_url).set(drivername="postgresql+psycopg")
    admin = create_engine(
        url.set(database="postgres"), isolation_level="AUTOCOMMIT", connect_args=_connect_args(url)
    )
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": DATABASE_NAME}
            ).scalar()
            if not exists:
                conn.execute(text(f"CREATE DATABASE {DATABASE_NAME}"))
    finally:
        admin.dispose()
    return url.set(database=DATABASE_NAME).render_as_string(hide_password=False)


def open_store(url: str) -> Engine:
    """Create the engine and the schema (idempotent)."""
    engine = connect_store(url)
    upgrade(engine)
    return engine


# Seconds to wait for a Postgres server before giving up, unless the URL says otherwise
# (?connect_timeout=N): a host that drops packets would otherwise hold a command for minutes.
CONNECT_TIMEOUT_S = 10


def _connect_args(url: URL) -> dict[str, Any]:
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        return {"connect_timeout": CONNECT_TIMEOUT_S}
    return {}


def connect_store(url: str) -> Engine:
    """The engine for a store whose schema is known to be there (no migrations)."""
    parsed = make_url(normalise_store_url(url))
    engine = create_engine(parsed, connect_args=_connect_args(parsed))
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

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
    whoever comes second finds the schema already there. A SQLite file found damaged on
    the way (``projections.sqlite_damage``) is moved aside and a fresh schema made in its
    place; the projector refills it from the log.
    """
    with _migration_lock(engine):
        try:
            return _upgrade(engine, revision)
        except Exception as exc:
            reason = damage_of(exc)
            if reason is None or sqlite_file(engine) is None:
                raise
            set_aside(engine, reason)
        return _upgrade(engine, revision)


def replace_damaged(engine: Engine) -> None:
    """After an error said ``engine``'s SQLite file is damaged: move it aside and make a
    fresh schema in its place. Unless, once this process holds the migration lock, the
    file there passes ``PRAGMA integrity_check``: another process replaced it meanwhile,
    and the caller simply tries again."""
    with _migration_lock(engine):
        engine.dispose()
        try:
            check_file(engine, thorough=True)
        except Exception as exc:
            reason = damage_of(exc)
            if reason is None:
                raise
            set_aside(engine, reason)
        _upgrade(engine, "head")


def _upgrade(engine: Engine, revision: str) -> str | None:
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(7262019)"))
        command.upgrade(_alembic_config(connection), revision)
        current: str | None = MigrationContext.configure(connection).get_current_revision()
        if revision == "head":
            # Every command that projects reads its checkpoints next: a damaged file shows
            # here already, at the cost of a page or two.
            connection.exec_driver_sql("SELECT count(*) FROM projector_checkpoints").all()
    return current


# From this many rows on, Postgres gets them by COPY (straight in, or into a staging table
# and merged), instead of one parameter set per row.
COPY_FROM_ROWS = 64
# (table, columns) of groups that clashed with existing rows once: merged from then on.
_MERGED_GROUPS: set[tuple[str, tuple[str, ...]]] = set()


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    update_columns: Sequence[str] | None = None,
) -> None:
    """Insert ``rows``; on a primary-key clash overwrite ``update_columns`` (all by default).

    Rows of one call must have the same keys, in the same order, and distinct primary keys.
    Replaying an event rewrites the same values, so applying a batch twice leaves the
    tables as applying it once.
    """
    if rows:
        columns = list(rows[0])
        upsert_values(conn, table, columns, [tuple(row.values()) for row in rows], update_columns)


def upsert_values(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    values: Sequence[tuple[Any, ...]],
    update_columns: Sequence[str] | None = None,
) -> None:
    """``upsert`` for rows given as tuples in the order of ``columns``."""
    if not values:
        return
    dialect = conn.dialect.name
    keys = [c.name for c in table.primary_key.columns]
    update = (
        list(update_columns)
        if update_columns is not None
        else [c for c in columns if c not in keys]
    )
    if dialect == "sqlite":
        _sqlite_upsert(conn, table, columns, keys, update, values)
    elif dialect == "postgresql":
        if len(values) >= COPY_FROM_ROWS:
            # Most groups create rows (a signal, a candle, an order placed): they are copied
            # straight in. A group that clashes updates rows instead (an order's result, a
            # position): it is merged through a staging table, and groups of the same table
            # and columns go that way from then on.
            signature = (table.name, tuple(columns))
            if signature not in _MERGED_GROUPS:
                if _postgres_copy_new(conn, table, columns, values):
                    return
                _MERGED_GROUPS.add(signature)
            _postgres_copy_upsert(conn, table, columns, keys, update, values)
        else:
            statement: Any = postgresql.insert(table)
            if update:
                statement = statement.on_conflict_do_update(
                    index_elements=keys, set_={c: statement.excluded[c] for c in update}
                )
            else:
                statement = statement.on_conflict_do_nothing(index_elements=keys)
            conn.execute(statement, [dict(zip(columns, row, strict=True)) for row in values])
    else:
        raise ValueError(f"unsupported store dialect {dialect!r}")


def _conflict_clause(quote: Any, keys: Sequence[str], update: Sequence[str]) -> str:
    target = ", ".join(quote(k) for k in keys)
    if not update:
        return f"ON CONFLICT ({target}) DO NOTHING"
    assignments = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in update)
    return f"ON CONFLICT ({target}) DO UPDATE SET {assignments}"


def _sqlite_upsert(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    keys: Sequence[str],
    update: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    # The DB-API's executemany with one prepared statement: no per-row compilation.
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    marks = ", ".join("?" for _ in columns)
    sql = (
        f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks}) "
        f"{_conflict_clause(quote, keys, update)}"
    )
    conn.exec_driver_sql(sql, list(rows))


def _copy_into(cursor: Any, relation: str, names: str, rows: Sequence[tuple[Any, ...]]) -> None:
    with cursor.copy(f"COPY {relation} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _postgres_copy_new(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> bool:
    """COPY straight into ``table``; False (and nothing written) if a row was there already,
    in which case the caller's merge gives the rows an upsert would."""
    import psycopg

    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    savepoint = conn.begin_nested()
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        _copy_into(cursor, quote(table.name), names, rows)
    except psycopg.errors.UniqueViolation:
        cursor.close()
        savepoint.rollback()
        return False
    cursor.close()
    savepoint.commit()
    return True


def _postgres_copy_upsert(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    keys: Sequence[str],
    update: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    # One staging table per table and column set, private to this session, typed like the
    # target (CREATE ... AS copies the column types and no constraints).
    signature = hashlib.sha256(",".join(columns).encode()).hexdigest()[:10]
    stage = quote(f"cdb_stage_{table.name}_{signature}")
    target = quote(table.name)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {names} FROM {target} WITH NO DATA"
        )
        _copy_into(cursor, stage, names, rows)
        cursor.execute(
            f"INSERT INTO {target} ({names}) SELECT {names} FROM {stage} "
            f"{_conflict_clause(quote, keys, update)}"
        )
        cursor.execute(f"TRUNCATE {stage}")
    finally:
        cursor.close()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    with _lock_beside(engine, ".migrate.lock"):
        yield


@contextlib.contextmanager
def _lock_beside(engine: Engine, suffix: str) -> Iterator[None]:
    """An exclusive lock on a file beside a SQLite database (none for ``:memory:``), held
    until the block ends; the kernel lets go of it if the process dies.

    The file is there only while someone holds the lock (or one who held it was killed):
    the holder removes it before letting go, so commands leave nothing behind. A waiter
    that then gets the lock of the removed file finds no file, or another one, at the path
    and queues again on what is there now; only the holder of the file at the path goes
    on. A file left by a killed holder is taken over and removed by the next one.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    path = f"{database}{suffix}"
    lock = _lock_file_at(path)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # still holding the lock: nobody can take this file meanwhile
        os.close(lock)  # lets go of the lock


def _lock_file_at(path: str) -> int:
    """A descriptor of the file at ``path`` (made if missing), locked exclusively, that is
    still the file at ``path`` once the lock is held."""
    while True:
        lock = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            held = os.fstat(lock)
            current = os.stat(path)
        except FileNotFoundError:
            os.close(lock)  # its holder removed it while we waited
            continue
        except BaseException:
            os.close(lock)
            raise
        if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
            return lock
        os.close(lock)  # another file took its place while we waited


# Rebuilding a Postgres table: the rows go into a fresh table beside it, without indexes
# (a bulk index build at the end is several times faster than keeping indexes up to date
# row by row), which then takes the live table's place in one transaction.
SHADOW_PREFIX = "cdb_rebuild_"
# Held (pg_advisory_lock) by a rebuild while shadow tables exist: rebuilds take turns.
REBUILD_LOCK = 7262020


def shadow_of(table: Table) -> Table:
    """The SQLAlchemy handle of ``table``'s shadow (see ``create_shadow``)."""
    columns = (Column(c.name, c.type, primary_key=c.primary_key) for c in table.columns)
    return Table(SHADOW_PREFIX + table.name, MetaData(), *columns)


def create_shadow(conn: Connection, table: Table) -> Table:
    """A fresh, empty Postgres table with ``table``'s columns but no key or index, and its
    handle. Rows are appended to it (``append_values``); it gets its key and indexes from
    ``index_shadow`` (its key earlier from ``add_primary_key`` if rows must be merged into
    it by ``upsert``), and takes ``table``'s place in ``swap_in``."""
    quote = conn.dialect.identifier_preparer.quote
    shadow = shadow_of(table)
    conn.exec_driver_sql(
        f"CREATE TABLE {quote(shadow.name)} (LIKE {quote(table.name)} INCLUDING DEFAULTS)"
    )
    return shadow


def drop_shadows(conn: Connection, tables: Sequence[Table]) -> None:
    """Drop what an interrupted rebuild may have left (shadows are never read)."""
    quote = conn.dialect.identifier_preparer.quote
    for table in tables:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(shadow_of(table).name)}")


def add_primary_key(conn: Connection, table: Table) -> None:
    quote = conn.dialect.identifier_preparer.quote
    keys = ", ".join(quote(c.name) for c in table.primary_key.columns)
    conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} ADD PRIMARY KEY ({keys})")


def append_values(
    conn: Connection, table: Table, columns: Sequence[str], values: Sequence[tuple[Any, ...]]
) -> None:
    """COPY ``values`` into ``table`` (a shadow), no questions asked."""
    if not values:
        return
    quote = conn.dialect.identifier_preparer.quote
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        _copy_into(cursor, quote(table.name), ", ".join(quote(c) for c in columns), values)
    finally:
        cursor.close()


def _primary_key_name(conn: Connection, relation: str) -> str | None:
    name: str | None = conn.exec_driver_sql(
        "SELECT conname FROM pg_constraint WHERE conrelid = %(t)s::regclass AND contype = 'p'",
        {"t": relation},
    ).scalar()
    return name


def _indexes(conn: Connection, table: Table) -> list[tuple[str, str, str]]:
    """``table``'s indexes other than its key: name, definition, and the name its shadow's
    copy has until ``swap_in``."""
    found = conn.exec_driver_sql(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = %(t)s::regclass AND NOT x.indisprimary ORDER BY i.relname",
        {"t": table.name},
    ).all()
    return [
        (name, definition, f"{SHADOW_PREFIX}{table.name[:40]}_{number}")
        for number, (name, definition) in enumerate(found)
    ]


def index_shadow(conn: Connection, table: Table) -> None:
    """Give ``table``'s shadow the primary key (unless it has it) and the indexes of
    ``table``, under names of its own until ``swap_in``.

    Rows appended twice under one key (a log that holds an event twice) keep the last one
    written, as an upsert would have: a fresh table that is only appended to stores rows in
    the order they came, so the highest ``ctid`` is the latest row.
    """
    import psycopg

    quote = conn.dialect.identifier_preparer.quote
    shadow = shadow_of(table)
    new = quote(shadow.name)
    if _primary_key_name(conn, shadow.name) is None:
        savepoint = conn.begin_nested()
        try:
            add_primary_key(conn, shadow)
        except Exception as exc:
            savepoint.rollback()
            if not isinstance(getattr(exc, "orig", None), psycopg.errors.UniqueViolation):
                raise
            keys = [quote(c.name) for c in table.primary_key.columns]
            same_key = " AND ".join(f"a.{k} = b.{k}" for k in keys)
            conn.exec_driver_sql(
                f"DELETE FROM {new} a USING {new} b WHERE {same_key} AND a.ctid < b.ctid"
            )
            add_primary_key(conn, shadow)
        else:
            savepoint.commit()
    for _name, definition, temporary in _indexes(conn, table):
        head, _, rest = definition.partition(" ON ")
        using = rest[rest.index(" USING ") :]
        conn.exec_driver_sql(f"{head.rsplit(' ', 1)[0]} {quote(temporary)} ON {new}{using}")


def swap_in(conn: Connection, table: Table) -> None:
    """Put ``table``'s shadow (indexed, see ``index_shadow``) in its place, with the names
    of its key and indexes. Readers of ``table`` wait from here until the commit."""
    quote = conn.dialect.identifier_preparer.quote
    live = quote(table.name)
    constraint = _primary_key_name(conn, table.name)
    indexes = _indexes(conn, table)
    conn.exec_driver_sql(f"DROP TABLE {live}")
    conn.exec_driver_sql(f"ALTER TABLE {quote(shadow_of(table).name)} RENAME TO {live}")
    shadow_key = _primary_key_name(conn, table.name)
    if constraint is not None and shadow_key is not None:
        conn.exec_driver_sql(
            f"ALTER TABLE {live} RENAME CONSTRAINT {quote(shadow_key)} TO {quote(constraint)}"
        )
    for name, _definition, temporary in indexes:
        conn.exec_driver_sql(f"ALTER INDEX {quote(temporary)} RENAME TO {quote(name)}")


# -- rebuilds of a shared store -------------------------------------------------------------


@contextlib.contextmanager
def rebuild_lock(engine: Engine) -> Iterator[None]:
    """Rebuilds of one store take turns: the second waits until the first has committed
    or failed, then runs. On Postgres a session advisory lock on a connection of its own
    (``REBUILD_LOCK``; the server lets go of it if the process dies); on SQLite a lock
    file beside the database."""
    if engine.dialect.name != "postgresql":
        with _lock_beside(engine, ".rebuild.lock"):
            yield
        return
    with engine.connect() as lock:
        lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": REBUILD_LOCK})
        lock.commit()
        try:
            yield
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": REBUILD_LOCK})
            lock.commit()


def begin_writing(conn: Connection) -> None:
    """Start ``conn``'s transaction as a writer at once (SQLite's ``BEGIN IMMEDIATE``):
    what it reads before its first write then stays true until it commits. Postgres
    transactions need nothing here."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def run_ids_in(conn: Connection, table: Table) -> list[str]:
    """The distinct run ids of ``table``'s rows, by a walk along its key (every read
    model's key starts with ``run_id``): one index probe per run, however many rows."""
    name = conn.dialect.identifier_preparer.quote(table.name)
    found = conn.exec_driver_sql(
        f"WITH RECURSIVE walk(run_id) AS (SELECT min(run_id) FROM {name} UNION ALL "
        f"SELECT (SELECT min(run_id) FROM {name} WHERE run_id > walk.run_id) FROM walk "
        "WHERE walk.run_id IS NOT NULL) SELECT run_id FROM walk WHERE run_id IS NOT NULL"
    ).all()
    return [row[0] for row in found]


def delete_runs(conn: Connection, table: Table, run_ids: Sequence[str]) -> None:
    """Delete the rows of ``run_ids`` from ``table``."""
    for start in range(0, len(run_ids), _RUNS_PER_STATEMENT):
        chunk = list(run_ids[start : start + _RUNS_PER_STATEMENT])
        conn.execute(table.delete().where(table.c.run_id.in_(chunk)))


# Run ids bound in one statement (SQLite allows 32,766 parameters; a run id is one).
_RUNS_PER_STATEMENT = 500
# A swap that Postgres picked as the victim of a deadlock (with a reader that takes its
# tables in another order) lets go of its locks and tries again, this many times.
SWAP_LOCK_ATTEMPTS = 20


def lock_for_swap(conn: Connection, tables: Sequence[Table]) -> None:
    """Take ``tables`` (live Postgres read models) in ACCESS EXCLUSIVE mode, in name order,
    for the rest of ``conn``'s transaction: every writer that is writing to them commits
    first, every later one waits for the swap, and so does every reader.

    Projectors write their tables in name order too (``projector.write_batches``), so a
    projector and a swap never wait for each other in a circle. A reader holding one
    table while it waits for another can: if Postgres resolves that by cancelling the
    lock taken here, it is released (a savepoint) and taken again."""
    import psycopg

    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(t.name) for t in sorted(tables, key=lambda t: t.name))
    for attempt in range(SWAP_LOCK_ATTEMPTS):
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
        except Exception as exc:
            savepoint.rollback()
            lost = (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable)
            if not isinstance(getattr(exc, "orig", None), lost):
                raise
            if attempt + 1 == SWAP_LOCK_ATTEMPTS:
                raise
            continue
        savepoint.commit()
        return


def copy_runs_into_shadow(conn: Connection, table: Table, run_ids: Sequence[str]) -> None:
    """Copy the live rows of ``run_ids`` from ``table`` into its shadow, so they outlive
    the swap (rows of logs other than the one rebuilt)."""
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c.name) for c in table.columns)
    conn.exec_driver_sql(
        f"INSERT INTO {quote(shadow_of(table).name)} ({names}) "
        f"SELECT {names} FROM {quote(table.name)} WHERE run_id = ANY(%(runs)s)",
        {"runs": list(run_ids)},
    )


def fewer_kept_than_rebuilt(conn: Connection, table: Table, kept: Sequence[str]) -> bool:
    """Whether the live rows of the ``kept`` runs are no more than the rows of ``table``'s
    shadow (counted only as far as it takes to tell)."""
    quote = conn.dialect.identifier_preparer.quote
    rebuilt = conn.exec_driver_sql(f"SELECT count(*) FROM {quote(shadow_of(table).name)}")
    limit = int(rebuilt.scalar_one())
    found = conn.exec_driver_sql(
        f"SELECT count(*) FROM (SELECT 1 FROM {quote(table.name)} "
        "WHERE run_id = ANY(%(runs)s) LIMIT %(limit)s) AS kept",
        {"runs": list(kept), "limit": limit + 1},
    )
    return int(found.scalar_one()) <= limit


def refill_from_shadow(conn: Connection, table: Table, kept: Sequence[str]) -> None:
    """The other way to the same table as copying the ``kept`` runs' rows into the shadow
    and swapping it in, when the kept rows are the many: delete every other live row of
    ``table``, insert the shadow's rows, and drop the shadow."""
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c.name) for c in table.columns)
    live, shadow = quote(table.name), quote(shadow_of(table).name)
    conn.exec_driver_sql(
        f"DELETE FROM {live} WHERE NOT (run_id = ANY(%(runs)s))", {"runs": list(kept)}
    )
    conn.exec_driver_sql(f"INSERT INTO {live} ({names}) SELECT {names} FROM {shadow}")
    conn.exec_driver_sql(f"DROP TABLE {shadow}")
