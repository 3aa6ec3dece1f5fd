"""The engine as a consumer of the log: a run's input records in, the pipeline's events out.

This is the body of the stream agent: decode, call the pure pipeline, return the events to
publish. It keeps no state that the log does not define: a run's pipeline is built from its
``run_metadata`` event, and its candles are checked against their sequence numbers, so a
redelivered candle is skipped and a missing one is an error, never a silent gap.
"""

from __future__ import annotations

import logging
from typing import Any

from domain.events import (
    BacktestRunMetadata,
    Event,
    MarketDataCompleted,
    MarketDataEvent,
    candle_of,
    interval_ms,
)
from streams.codec import DecodeError, decode, decode_json
from streams.run_driver import OutputFilter, RunEngine
from streams.snapshots import SNAPSHOT_EVERY, Snapshot, SnapshotStore

__all__ = ["EngineError", "EngineProcessor", "OutputFilter"]

logger = logging.getLogger("cdb.engine")


class EngineError(RuntimeError):
    pass


class EngineProcessor:
    def __init__(self, snapshots: SnapshotStore | None = None, every: int = SNAPSHOT_EVERY) -> None:
        """With ``snapshots``, each run's state is saved every ``every`` candles whose
        position in the log is known (see ``on_record``), for a restart to resume from."""
        self._snapshots = snapshots
        self._every = every
        self._runs: dict[str, RunEngine] = {}
        self._interval_ms: dict[str, int] = {}
        # Runs whose input is done with: ids only, so a long-running worker does not keep
        # every run's final events (they are returned once, by the record that ends it).
        self.finished: set[str] = set()
        # Market data that arrived before its run's metadata (topics are not ordered
        # among each other), replayed in order once the metadata is there.
        self._waiting: dict[str, list[bytes]] = {}

    def _engine(self, metadata: BacktestRunMetadata) -> RunEngine:
        engine = RunEngine(metadata, snapshots=self._snapshots, snapshot_every=self._every)
        self._runs[metadata.run_id] = engine
        return engine

    def on_record(self, value: bytes, at: tuple[int, int] | None = None) -> list[Event]:
        """Any input record: a run's metadata (``runs``) or its market data; ``at``: the
        (partition, offset) of a market_data record, where snapshots are taken."""
        payload = decode_json(value)
        if payload.get("type") in ("run_metadata", "run_completed"):
            return self.on_run_metadata(value)
        return self._on_market_data(payload, value, wait=True, at=at)

    def restore(self, metadata: BacktestRunMetadata, snapshot: Snapshot) -> None:
        """Take up ``metadata``'s run from ``snapshot``: candles before it are passed over
        as already processed."""
        self._engine(metadata).restore(snapshot)

    def mark_finished(self, run_id: str) -> None:
        """A run whose ``run_completed`` is already in the log: its input is done with."""
        self._runs.pop(run_id, None)
        self._waiting.pop(run_id, None)
        self.finished.add(run_id)

    def on_run_metadata(self, value: bytes) -> list[Event]:
        metadata = decode(value)
        if not isinstance(metadata, BacktestRunMetadata):
            return []  # run_completed and other run events are outputs, not inputs
        if metadata.run_id in self._runs or metadata.run_id in self.finished:
            return []  # redelivered: the run is already under way
        events = self._engine(metadata).begin()
        for waiting in self._waiting.pop(metadata.run_id, []):
            events.extend(self.on_market_data(waiting))
        return events

    def knows(self, run_id: str) -> bool:
        return run_id in self._runs

    def on_market_data(self, value: bytes, *, wait: bool = False) -> list[Event]:
        """Process one ``market_data`` record (a candle or the end-of-input marker)."""
        return self._on_market_data(decode_json(value), value, wait=wait)

    def _on_market_data(
        self,
        payload: dict[str, Any],
        value: bytes,
        *,
        wait: bool,
        at: tuple[int, int] | None = None,
    ) -> list[Event]:
        run_id = str(payload.get("run_id"))
        engine = self._runs.get(run_id)
        if engine is None:
            if run_id in self.finished:
                return []  # a redelivered record of a finished run
            if wait:
                self._waiting.setdefault(run_id, []).append(value)
                return []
            raise EngineError(f"market data for run {run_id!r} before its run_metadata")
        kind = payload.get("type")
        if kind == "market_data":
            return self._candle(engine, payload, at)
        if kind == "market_data_completed":
            return self._end(engine, value)
        raise EngineError(f"unexpected {kind!r} record in market_data")

    def _candle(
        self, engine: RunEngine, payload: dict[str, Any], at: tuple[int, int] | None
    ) -> list[Event]:
        pipeline, run_id = engine.pipeline, engine.run_id
        sequence = int(payload.get("sequence", -1))
        if sequence < pipeline.candles:
            return []  # redelivered: already processed
        if sequence > pipeline.candles:
            raise EngineError(
                f"run {run_id}: candle {pipeline.candles} is missing (got {sequence})"
            )
        try:
            event = MarketDataEvent.model_validate(payload)
        except ValueError as exc:
            raise EngineError(f"run {run_id}: invalid candle {sequence}: {exc}") from None
        step = self._interval_ms.get(event.interval)
        if step is None:
            step = self._interval_ms[event.interval] = interval_ms(event.interval)
        events = pipeline.on_candle(candle_of(event, step))
        if at is not None and pipeline.candles % self._every == 0:
            # Where the run's next candle is: no earlier than after this one.
            engine.snapshot(at[0], at[1] + 1)
        return events

    def _end(self, engine: RunEngine, value: bytes) -> list[Event]:
        pipeline, run_id = engine.pipeline, engine.run_id
        try:
            marker = decode(value)
        except DecodeError as exc:
            raise EngineError(f"run {run_id}: invalid end of input: {exc}") from None
        assert isinstance(marker, MarketDataCompleted)
        if marker.candles != pipeline.candles:
            raise EngineError(
                f"run {run_id}: input ended after {marker.candles} candles but "
                f"{pipeline.candles} arrived"
            )
        final = engine.finish(marker.dead_letters)
        del self._runs[run_id]
        self.finished.add(run_id)
        return final
