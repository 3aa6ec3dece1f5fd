"""A read-model store that goes away and comes back, as a Postgres server restart or a
network cut would look to the processes using it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Engine, create_engine, make_url, text


@contextlib.contextmanager
def postgres_database_away(store: Engine) -> Iterator[None]:
    """Inside the block, ``store``'s database (claire_de_binare) takes no connections and has
    none open, from any process (this one's pool is emptied too). It takes them again when
    the block ends, however it ends."""
    admin = create_engine(
        make_url(store.url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as conn:
            conn.execute(text("ALTER DATABASE claire_de_binare ALLOW_CONNECTIONS false"))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = 'claire_de_binare' AND pid <> pg_backend_pid()"
                )
            )
        store.dispose()
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text("ALTER DATABASE claire_de_binare ALLOW_CONNECTIONS true"))
        admin.dispose()
