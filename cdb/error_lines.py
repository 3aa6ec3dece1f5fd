"""How a failed command ends: one line on stderr and an exit code.

Guarantees (``cdb.cli.main`` relies on each):

1. Every exception a command raises becomes exactly one line, ``cdb: error: ...``: the
   cause and, where there is one, what to do. Only ``--verbose`` (or ``$CDB_VERBOSE=1``)
   adds the traceback, before that line.
2. A password never appears: a store is named by host, port, database and user, or by
   its file.
3. Exit code 2 for what the user can act on: bad input, and a database, broker or file
   system that refuses or fails. Exit code 1 for anything else: an internal error, a bug
   of cdb's, whose line says so and how to see the traceback.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from cdb.common import EXIT_USAGE

EXIT_INTERNAL = 1


@dataclass(frozen=True)
class Places:
    """Where the failed command was working, to name it in the line (never a password)."""

    data_dir: Path
    store_url: str
    log_location: str


@dataclass(frozen=True)
class Failure:
    line: str
    exit_code: int


def failure_of(exc: BaseException, places: Places | None, expected: tuple[type, ...]) -> Failure:
    """The line and exit code for ``exc``; ``expected`` are the errors whose own message is
    already the line (bad input, a damaged log, ...)."""
    if isinstance(exc, expected):
        return Failure(_single(str(exc)), EXIT_USAGE)
    if isinstance(exc, DBAPIError):
        return Failure(_store_failure(exc, places), EXIT_USAGE)
    if isinstance(exc, ArgumentError):
        return Failure(f"the store URL cannot be used: {_first_line(exc)}", EXIT_USAGE)
    broker = _broker_failure(exc, places)
    if broker is not None:
        return Failure(broker, EXIT_USAGE)
    redis_line = _redis_failure(exc)
    if redis_line is not None:
        return Failure(redis_line, EXIT_USAGE)
    if isinstance(exc, OSError):
        return Failure(_file_failure(exc, places), EXIT_USAGE)
    return Failure(
        f"internal error: {type(exc).__name__}: {_first_line(exc)} (a bug in cdb: rerun "
        "with --verbose for the traceback, and report it)",
        EXIT_INTERNAL,
    )


def _single(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


# -- the read-model store ---------------------------------------------------------------------

# What to do, by what the server or SQLite said: (pattern, hint), the first match wins.
_POSTGRES_HINTS = (
    ('role ".*" does not exist', "give a user that exists on that server"),
    (
        'database ".*" does not exist',
        "create the database there (createdb claire_de_binare), then run `cdb db upgrade`",
    ),
    ("password authentication failed", "check the user and password"),
    ("no password supplied", "give the password in the URL or in $POSTGRES_PASSWORD"),
    ("connection refused", "is Postgres running there? check the host and port"),
    ("resolve host", "check the host name"),
    ("translate host name", "check the host name"),
    ("timeout", "the server did not answer: check the host, the port and the network"),
    ("timed out", "the server did not answer: check the host, the port and the network"),
    ("unreachable", "check the host and the network"),
    ("too many clients", "the server has no connection to spare: try again later"),
)
_SQLITE_HINTS = (
    ("locked", "another process is writing it: let it finish, then run the command again"),
    (
        "malformed",
        "the read models are disposable: `cdb projections rebuild` moves it aside and refolds it",
    ),
    (
        "not a database",
        "the read models are disposable: `cdb projections rebuild` moves it aside and refolds it",
    ),
    ("unable to open", "check that its directory exists and can be written"),
    ("full", "free some space on that device, then run the command again"),
    ("readonly", "the file or its directory is read-only: check the permissions"),
    ("disk I/O error", "check the free space on that device and the file's permissions"),
)
_STORE_OPTION = "--store or $CDB_STORE_URL"


def _store_failure(exc: DBAPIError, places: Places | None) -> str:
    cause = exc.orig if exc.orig is not None else exc
    message = _first_line(cause)
    if isinstance(cause, sqlite3.Error):
        reason = message
        hint = _hint(reason, _SQLITE_HINTS)
        return f"the read models in {_sqlite_file(places)}: {reason}" + (
            f"; {hint}" if hint else ""
        )
    # Postgres (psycopg): "connection failed: connection to server at "H", port P failed:
    # FATAL:  role "x" does not exist". The reason is the server's part.
    connecting = message.startswith(("connection failed", "failed to resolve host"))
    reason = re.sub(r"^(FATAL|ERROR):\s+", "", message.rsplit(" failed: ", 1)[-1]).strip()
    hint = _hint(reason, _POSTGRES_HINTS) or "check the server and the URL"
    where = _postgres_place(places)
    if connecting:
        return f"cannot reach the store {where}: {reason}; {hint} ({_STORE_OPTION})"
    return f"the store {where} failed: {reason}; {hint}"


def _hint(reason: str, hints: tuple[tuple[str, str], ...]) -> str | None:
    return next((hint for pattern, hint in hints if re.search(pattern, reason, re.I)), None)


def _postgres_place(places: Places | None) -> str:
    if places is None:
        return "(Postgres, the --store URL)"
    try:
        url = make_url(places.store_url)
    except (ArgumentError, ValueError):
        return "(Postgres, the --store URL)"
    return (
        f"at {url.host or 'localhost'}:{url.port or 5432} "
        f"(Postgres database {url.database}, user {url.username or 'the default'})"
    )


def _sqlite_file(places: Places | None) -> str:
    if places is None:
        return "the SQLite file"
    try:
        return make_url(places.store_url).database or places.store_url
    except (ArgumentError, ValueError):
        return places.store_url


# -- the broker and Redis ---------------------------------------------------------------------


def _broker_failure(exc: BaseException, places: Places | None) -> str | None:
    from aiokafka.errors import KafkaError

    if not isinstance(exc, KafkaError):
        return None
    where = f" at {places.log_location}" if places is not None else ""
    return (
        f"the Kafka broker{where}: {_first_line(exc)}; check that it is running and "
        "reachable (--log or $CDB_LOG)"
    )


def _redis_failure(exc: BaseException) -> str | None:
    import redis

    if not isinstance(exc, redis.RedisError):
        return None
    return f"Redis: {_first_line(exc)}; check that it is running (--redis or $REDIS_HOST)"


# -- files ------------------------------------------------------------------------------------

_FILE_HINTS = {
    errno.ENOSPC: "free some space on that device, then run the command again",
    errno.EDQUOT: "free some space within the quota, then run the command again",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
    errno.EROFS: "the file system is read-only: choose a writable --data-dir",
    errno.ENOTDIR: "a part of that path is a file, not a directory",
    errno.EISDIR: "that is a directory: give a file",
    errno.ENOENT: "check the path",
    errno.EEXIST: "something is in the way there: move it or choose another path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
}


def _file_failure(exc: OSError, places: Places | None) -> str:
    reason = (exc.strerror or _first_line(exc)).lower()
    hint = _FILE_HINTS.get(exc.errno or 0)
    if exc.filename is not None:
        return f"{os.fsdecode(exc.filename)}: {reason}" + (f"; {hint}" if hint else "")
    # A write to an open file does not say which file: cdb writes to stdout and under the
    # data directory, so the line names both.
    where = "writing to standard output" + (
        f" or under the data directory {places.data_dir}" if places is not None else ""
    )
    return f"{reason} ({where})" + (f"; {hint}" if hint else "")
