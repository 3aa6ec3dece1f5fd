"""Writing a command's output to stdout, so that output that cannot be written (a full
disk behind a redirection, say) is one error line, not a second message at exit."""

from __future__ import annotations

import os
import sys
from typing import Any

import orjson

from cdb.common import UsageError


def write_lines(lines: list[str]) -> None:
    sys.stdout.write("\n".join(lines) + "\n")


def write_json(value: Any) -> None:
    """``value`` as one JSON line."""
    sys.stdout.write(orjson.dumps(value).decode() + "\n")


def write_bytes(line: bytes) -> None:
    """A line of bytes (``cdb log read``'s records, written as they are on the wire)."""
    try:
        sys.stdout.buffer.write(line)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise output_error(exc) from None


def output_error(exc: OSError) -> UsageError:
    """A write to stdout that failed: an error that names stdout, since the exception
    itself names no file."""
    reason = (exc.strerror or str(exc)).lower()
    return UsageError(f"cannot write to standard output: {reason}")


def flush_output() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise output_error(exc) from None


def quiet_unwritable_stdout() -> None:
    """If what is left for stdout cannot be written (a full disk, say), drop it now, so
    that the interpreter's own flush at exit adds no second message."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass  # nothing more can be done for a stream that has no file behind it
