"""Helper processes that never outlive the process that forked them.

A backtest forks helpers (the market-data writer, the candle sink). If the parent is
killed, even by SIGKILL, they must exit at once: they hold the caller's stdout and
stderr, and a helper that lingers keeps a wrapper waiting on the output. Two mechanisms,
so that either suffices:

1. ``die_with_parent``: on Linux the kernel sends the helper SIGKILL when its parent
   exits (``PR_SET_PDEATHSIG``); a helper whose parent is already gone when it starts
   exits at once.
2. Pipes whose other end only the parent holds: each helper closes, right after the fork,
   every pipe end that is not its own (``close_inherited``), so a read from the parent
   ends with EOF when the parent does, on every platform.

The embedded log's writer lock is also released in every forked child (see
``streams.embedded_log``): only the process that took it holds it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Iterable
from multiprocessing.connection import Connection

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """In a forked helper: be killed when the parent exits; exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the pipes still tell
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the request took effect


def close_inherited(connections: Iterable[Connection | None]) -> None:
    """In a forked helper: close the copies of pipe ends that belong to other processes."""
    for connection in connections:
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.close()
