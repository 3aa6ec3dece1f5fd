"""Pausing the cyclic garbage collector around bulk work.

Running a backtest, folding a log or hashing a table allocates millions of short-lived,
acyclic objects (events, rows, tuples); the cyclic collector would only rescan them, so
it pauses while such work runs and resumes as it was.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
