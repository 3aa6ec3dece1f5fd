"""The staged topology's three cores on an in-memory log, records delivered in a random
order: the same contents as on Kafka, every interleaving across topics a seed away."""

from __future__ import annotations

import random
from pathlib import Path

import orjson

from streams import topics
from streams.codec import encode
from streams.embedded_log import EmbeddedLog
from streams.staged import STAGES, StageCore


class Bus:
    """Topics as lists of values; each stage reads its inputs at its own cursors."""

    def __init__(self, inputs: dict[str, list[bytes]], seed: int) -> None:
        self.topics: dict[str, list[bytes]] = {name: list(v) for name, v in inputs.items()}
        self.random = random.Random(seed)
        self.cores: dict[str, StageCore] = {name: make() for name, make in STAGES.items()}
        self.cursors: dict[str, dict[str, int]] = {
            name: dict.fromkeys(core.inputs, 0) for name, core in self.cores.items()
        }

    def _unread(self, stage: str) -> list[str]:
        cursors = self.cursors[stage]
        return [t for t, at in cursors.items() if at < len(self.topics.get(t, []))]

    def step(self) -> bool:
        """Deliver a random slice of a random topic to a random stage; False when all
        is read."""
        busy = [s for s in self.cores if self._unread(s)]
        if not busy:
            return False
        stage = self.random.choice(busy)
        topic = self.random.choice(self._unread(stage))
        at = self.cursors[stage][topic]
        values = self.topics[topic][at : at + self.random.randint(1, 40)]
        self.cursors[stage][topic] = at + len(values)
        core = self.cores[stage]
        core.take_all(values)
        self.publish(core)
        return True

    def publish(self, core: StageCore) -> None:
        events, control = core.drain()
        for event in events:
            self.topics.setdefault(topics.TOPIC_OF_EVENT[event.type], []).append(encode(event))
        for record in control:
            self.topics.setdefault(topics.STAGE_CONTROL, []).append(orjson.dumps(record))

    def restart(self, stage: str) -> None:
        """A fresh core for ``stage`` that refolds the log as it stands (a killed agent's
        successor), then reads on from where the log ends."""
        core = STAGES[stage]()
        for topic in core.outputs:
            for value in self.topics.get(topic, []):
                head = orjson.loads(value)
                core.mark_written(str(head["run_id"]), str(head["type"]), int(head["sequence"]))
        for topic in core.refold:
            core.take_all(list(self.topics.get(topic, [])))
        self.cores[stage] = core
        self.cursors[stage] = {t: len(self.topics.get(t, [])) for t in core.inputs}
        self.publish(core)

    def run(self, restarts: int = 0, every: int = 97) -> int:
        """Deliver until all is read; with ``restarts``, every ``every`` steps one stage
        (in turn) is replaced by a fresh core that refolds the log. How many restarted."""
        steps = done = 0
        stages = list(STAGES)
        while self.step():
            steps += 1
            if done < restarts and steps % every == 0:
                self.restart(stages[done % len(stages)])
                done += 1
        return done


def run_inputs(log_dir: Path) -> tuple[dict[str, list[bytes]], dict[str, list[bytes]]]:
    """A fused run's input records (its metadata and market data) and what it wrote on
    every other topic, from the embedded log at ``log_dir``."""
    inputs: dict[str, list[bytes]] = {topics.RUNS: [], topics.MARKET_DATA: []}
    written: dict[str, list[bytes]] = {}
    with EmbeddedLog(log_dir) as log:
        for topic in log.topic_names():
            for partition in range(log.partitions(topic)):
                for record in log.read(topic, partition):
                    kind = orjson.loads(record.value)["type"]
                    if topic == topics.MARKET_DATA or kind == "run_metadata":
                        inputs[topic].append(record.value)
                    elif topic != topics.DEAD_LETTERS:
                        written.setdefault(topic, []).append(record.value)
    return inputs, written
