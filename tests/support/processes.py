"""Running ``cdb`` and other servers as processes of their own: free ports, the environment
they get, starting and stopping them, and waiting for what they should do."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    """A loopback port nothing listens on (bound once by the OS, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], bool], what: str, timeout_s: float = 60, poll_s: float = 0.05
) -> None:
    """Return once ``condition()`` holds, asking every ``poll_s`` seconds; fail the test
    naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def local_store_env() -> dict[str, str]:
    """This process's environment, but the read models go to SQLite in the data directory
    the command names, whatever a store URL or the seed's Postgres variables say."""
    return {k: v for k, v in os.environ.items() if k not in {"CDB_STORE_URL", "POSTGRES_HOST"}}


def default_settings_env() -> dict[str, str]:
    """This process's environment without any cdb setting (``CDB_*``, the seed's
    ``POSTGRES_*``), and with this checkout first on the import path: ``python3 -m cdb``
    run in any directory runs this code, with its defaults (``./var`` there, SQLite)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDB_", "POSTGRES_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def faust_data_env(where: Path) -> dict[str, str]:
    """What a `cdb worker` needs in its environment so that the folder faust makes at start
    (``claire-de-binare-engine-data/``, empty with the memory store) is made in ``where``,
    not in its working directory, the project root."""
    return {"FAUST_DATADIR": str(where)}


@contextlib.contextmanager
def cdb_process(
    out: Path, *argv: str, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A `cdb` subprocess writing its output to ``out`` (``local_store_env()`` unless
    ``env`` is given), killed on the way out if still running."""
    with open(out, "ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cdb", *argv],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else local_store_env(),
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def cdb_output(
    *argv: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A `cdb` command run to its end, its output captured (``local_store_env()`` unless
    ``env`` is given)."""
    return subprocess.run(
        [sys.executable, "-m", "cdb", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(env) if env is not None else local_store_env(),
    )


def cdb_status(places: list[str], run_id: str) -> dict[str, Any]:
    """`cdb status --json` of the run ({} while the read models do not have it)."""
    done = cdb_output(*places, "status", "--run-id", run_id, "--json")
    if done.returncode != 0:
        return {}
    status: dict[str, Any] = orjson.loads(done.stdout)
    return status


def killed(process: subprocess.Popen[bytes], out: Path) -> None:
    """SIGKILL ``process``, which must still have been running (not ended by itself)."""
    process.send_signal(signal.SIGKILL)
    code = process.wait(timeout=30)
    assert code == -signal.SIGKILL, (code, out.read_text(errors="replace")[-2000:])


def exits_cleanly_by(process: subprocess.Popen[bytes], out: Path, deadline: float) -> None:
    """``process`` exits with code 0 before ``deadline`` (``time.monotonic()``)."""
    try:
        code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        code = None
    assert code == 0, (code, out.read_text(errors="replace")[-2000:])


def mock_backtest_summary(data_dir: Path, mock: list[str]) -> dict[str, Any]:
    """`cdb backtest --feed mock MOCK --json` on an embedded log in ``data_dir``: the plain
    backtest a live run over the same generated candles must equal."""
    done = cdb_output(
        "--data-dir",
        str(data_dir),
        "--log",
        "embedded",
        "backtest",
        "--feed",
        "mock",
        *mock,
        "--json",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = orjson.loads(done.stdout)
    return summary
