"""faust's Kafka transport with a short fetch wait, for agents that wait on each other.

faust builds its consumer with ``fetch_max_wait_ms=1500`` and offers no setting for it.
A broker may hold a fetch that long before it answers with records that arrived in the
meantime (Tansu does whenever a fetch names more than one partition); RE and XS hand
records back and forth once per fill, so every hop would cost up to that wait. This
transport is faust's own, with the wait set to ``FETCH_MAX_WAIT_MS``; the stage agents use
it under the URL scheme ``cdb-kafka://``.

A short wait is a poll: hundreds of fetches a second, which cost the broker and the agent
CPU while nothing comes. ``set_fetch_wait`` lets an agent that has been idle for a while
wait longer (``IDLE_FETCH_WAIT_MS``) and go back to the short wait as soon as records come.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as driver

SCHEME = "cdb-kafka"
# A broker may answer a fetch only when the wait is over, so this is most of a hop's
# latency; 2 ms halved a run's time against 10 ms, and 1 ms was no faster.
FETCH_MAX_WAIT_MS = 2
# The wait of an idle agent: its first record after a quiet spell may come this much late.
IDLE_FETCH_WAIT_MS = 100

# The aiokafka consumers this transport made in this process (faust runs each in a thread
# of its own; an int attribute is safe to set from another thread).
_consumers: list[Any] = []


def set_fetch_wait(ms: int) -> None:
    """The fetch wait of this process's consumers from their next fetch on."""
    for consumer in _consumers:
        consumer._fetch_max_wait_ms = ms
        fetcher = getattr(consumer, "_fetcher", None)  # made when the consumer starts
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = ms


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by the consumer when it starts its fetcher; no public way to set it.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        _consumers.append(consumer)
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer = _Consumer


def register() -> None:
    """Make ``cdb-kafka://`` name this transport (idempotent)."""
    TRANSPORTS.aliases[SCHEME] = f"{__name__}:Transport"
