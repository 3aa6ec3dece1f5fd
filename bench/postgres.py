"""A scratch database claire_de_binare on a Postgres server, for benchmarks."""

from __future__ import annotations

from sqlalchemy import create_engine, make_url, text


def scratch_database(server_url: str) -> str:
    """``server_url`` pointed at the database claire_de_binare, created if missing."""
    url = make_url(server_url).set(drivername="postgresql+psycopg")
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = 'claire_de_binare'")
            ).scalar()
            if not exists:
                conn.execute(text("CREATE DATABASE claire_de_binare"))
    finally:
        admin.dispose()
    return url.set(database="claire_de_binare").render_as_string(hide_password=False)
