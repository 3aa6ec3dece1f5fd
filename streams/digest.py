"""``log_digest``: one sha256 over a log's (or one run's) events, backend-independent.

Per topic, the event values (canonical JSON, each followed by a newline) are hashed in
partition and offset order; the digest is the sha256 of the lines
``topic TAB count TAB topic-sha256`` for every topic holding any of the events, in topic
name order. Offsets, partition numbers, record times and paths do not enter it, so the same
events give the same digest on the embedded log and on Kafka.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from streams.log_port import EventLog
from streams.topics import INTERNAL_TOPICS


class TopicDigest:
    """The running sha256 of one topic's values; ``finished`` when computed elsewhere."""

    __slots__ = ("count", "finished", "hasher")

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.count = 0
        self.finished: str | None = None

    def hexdigest(self) -> str:
        return self.finished if self.finished is not None else self.hasher.hexdigest()

    def update(self, values: list[bytes]) -> None:
        if values:
            self.hasher.update(b"\n".join(values))
            self.hasher.update(b"\n")
            self.count += len(values)


def combine(per_topic: dict[str, TopicDigest]) -> str:
    outer = hashlib.sha256()
    for topic in sorted(per_topic):
        digest = per_topic[topic]
        if digest.count:
            outer.update(f"{topic}\t{digest.count}\t{digest.hexdigest()}\n".encode())
    return outer.hexdigest()


def log_digest(
    log: EventLog, run_id: str | None = None, topics: Iterable[str] | None = None
) -> str:
    """Digest of the whole log, or of one run's events (records keyed by ``run_id``)."""
    # The staged topology's control records are its hand-off, not events: a staged run
    # and a fused one hold the same events and give the same digest.
    wanted = (
        sorted(topics)
        if topics is not None
        else [t for t in log.topic_names() if t not in INTERNAL_TOPICS]
    )
    per_topic: dict[str, TopicDigest] = {}
    for topic in wanted:
        digest = per_topic[topic] = TopicDigest()
        for partition in range(log.partitions(topic)):
            batch: list[bytes] = []
            for record in log.read(topic, partition):
                if run_id is None or record.key == run_id:
                    batch.append(record.value)
                    if len(batch) >= 8192:
                        digest.update(batch)
                        batch = []
            digest.update(batch)
    return combine(per_topic)
