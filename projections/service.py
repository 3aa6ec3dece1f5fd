"""The projector as a service: the log folded into the read models until stopped, and a
store that goes away ridden out.

Guarantees:

1. Exactly once, as ``projections.projector`` folds: each batch's rows and its checkpoint
   are one transaction, so a stop or a kill at any moment loses or doubles nothing, and
   the next start goes on from the checkpoints.
2. A store that fails to answer (``OperationalError``) is never given up on: health says
   so, one line says so, and the service tries again after a back-off (0.5 s, doubling
   up to 10 s); one line says when the store is back.
3. The wall clock paces retries and progress lines only; nothing folded depends on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from projections.projector import BATCH_SIZE, catch_up, follow
from projections.service_ports import FoldMetrics, HealthBoard
from projections.status import projection_lags
from streams.log_port import EventLog

FIRST_BACKOFF_S = 0.5
LONGEST_BACKOFF_S = 10.0
# While events stream in, a progress line at most this often (and one when it goes quiet).
PROGRESS_EVERY_S = 5.0
STORE = "store"

Say = Callable[[str], None]


def store_failure(exc: OperationalError) -> str:
    """The first line of what the store's driver said."""
    return str(exc.orig or exc).splitlines()[0]


class ProjectorService:
    """Follows ``log`` into the store ``open_store`` opens (again after an outage).

    ``say`` gets the service's lines (a progress count, the store lost and back); health
    gets the dependency ``store``; metrics the events folded and the lag per partition.
    """

    def __init__(
        self,
        log: EventLog,
        open_store: Callable[[], Engine],
        health: HealthBoard,
        metrics: FoldMetrics,
        say: Say,
        *,
        store_location: str,
        batch_size: int = BATCH_SIZE,
        poll_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._open_store = open_store
        self._health = health
        self._metrics = metrics
        self._say = say
        self._store_location = store_location
        self._batch_size = batch_size
        self._poll_s = poll_s
        self._sleep = sleep
        self._clock = clock
        self._engine: Engine | None = None
        self._backoff = 0.0
        self._folded = 0  # events folded since the last progress line
        self._said_at = clock()

    def run(self, should_stop: Callable[[], bool], *, once: bool = False) -> None:
        """Fold until ``should_stop()`` (or, with ``once``, until caught up)."""
        try:
            while not should_stop():
                try:
                    engine = self._store()
                    if once:
                        self._catch_up(engine)
                        return
                    follow(
                        self._log,
                        engine,
                        should_stop,
                        on_batch=self._folded_batch,
                        batch_size=self._batch_size,
                        poll_s=self._poll_s,
                    )
                except OperationalError as exc:
                    self._store_lost(exc)
        finally:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _store(self) -> Engine:
        if self._engine is None:
            self._engine = self._open_store()
        return self._engine

    def _catch_up(self, engine: Engine) -> None:
        done = catch_up(self._log, engine, batch_size=self._batch_size)
        for topic, n in done.by_topic.items():
            self._folded_batch(topic, n, {})
        self._folded_batch(None, 0, projection_lags(self._log, engine))

    def _folded_batch(self, topic: str | None, n: int, lags: Mapping[tuple[str, int], int]) -> None:
        """After each committed batch (topic None: an idle moment): health and metrics.
        The lags come from the follower's own fetches, so this costs no request."""
        self._health.set(STORE, True, self._store_location)
        if self._backoff:
            self._say("healthy: the store is back, folding resumes")
            self._backoff = 0.0
        if topic is not None:
            self._metrics.events_in(topic, n)
            self._folded += n
        for (lag_topic, partition), behind in lags.items():
            self._metrics.lag(lag_topic, partition, behind)
        now = self._clock()
        # A line when the log goes quiet, or every few seconds of a steady stream: not one
        # per batch.
        if self._folded and (topic is None or now - self._said_at >= PROGRESS_EVERY_S):
            self._say(f"{self._folded:,} events folded")
            self._folded, self._said_at = 0, now

    def _store_lost(self, exc: OperationalError) -> None:
        self._backoff = min(max(self._backoff * 2, FIRST_BACKOFF_S), LONGEST_BACKOFF_S)
        reason = store_failure(exc)
        self._health.set(STORE, False, reason)
        self._say(f"unhealthy: store unavailable ({reason}); retry in {self._backoff:g} s")
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._sleep(self._backoff)


class CatchUpAfterCommit:
    """What a live run calls after each commit: fold what it committed into the read
    models. A store that is away is noted (health, one line) and the run goes on: the log
    holds the truth, and the next commit catches the read models up."""

    def __init__(
        self, log: EventLog, engine: Engine, health: HealthBoard, metrics: FoldMetrics, say: Say
    ) -> None:
        self._log = log
        self._engine = engine
        self._health = health
        self._metrics = metrics
        self._say = say
        self._down = False

    def __call__(self) -> None:
        try:
            done = catch_up(self._log, self._engine)
        except OperationalError as exc:
            reason = store_failure(exc)
            self._health.set(STORE, False, reason)
            if not self._down:
                self._say(f"the store is unavailable ({reason}); going on")
            self._down = True
            return
        if self._down:
            self._say("the store is back; the read models catch up")
        self._down = False
        self._health.set(STORE, True, "")
        if done.events:
            for (topic, partition), behind in projection_lags(self._log, self._engine).items():
                self._metrics.lag(topic, partition, behind)
