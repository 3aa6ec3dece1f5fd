"""The engine as a consumer of the log: a run's input records in, the pipeline's events out.

This is the body of the stream agent: decode, call the pure pipeline, return the events to
publish. It keeps no state that the log does not define: a run's pipeline is built from its
``run_metadata`` event, and its candles are checked against their sequence numbers, so a
redelivered candle is skipped and a missing one is an error, never a silent gap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from domain.events import (
    BacktestRunMetadata,
    Event,
    MarketDataCompleted,
    MarketDataEvent,
    candle_of,
    interval_ms,
)
from domain.pipeline import PaperTradingPipeline
from streams.codec import DecodeError, decode, decode_json
from streams.snapshots import SNAPSHOT_EVERY, Snapshot, SnapshotStore

logger = logging.getLogger("cdb.engine")


class EngineError(RuntimeError):
    pass


class OutputFilter:
    """Lets through only events newer than what the log already holds for their stream."""

    def __init__(self, written: dict[tuple[str, str], int]) -> None:
        self._written = written

    def fresh(self, events: Iterable[Event]) -> list[Event]:
        out = []
        written = self._written
        for event in events:
            key = (event.run_id, event.type)
            if event.sequence > written.get(key, -1):
                written[key] = event.sequence
                out.append(event)
        return out


class EngineProcessor:
    def __init__(
        self,
        snapshots: SnapshotStore | None = None,
        every: int = SNAPSHOT_EVERY,
        code_version: str = "",
    ) -> None:
        """With ``snapshots``, each run's state is saved every ``every`` candles whose
        position in the log is known (see ``on_record``), for a restart to resume from."""
        self._snapshots = snapshots
        self._every = every
        self._code_version = code_version
        self._pipelines: dict[str, PaperTradingPipeline] = {}
        self._interval_ms: dict[str, int] = {}
        # Runs whose input is done with: ids only, so a long-running worker does not keep
        # every run's final events (they are returned once, by the record that ends it).
        self.finished: set[str] = set()
        # Market data that arrived before its run's metadata (topics are not ordered
        # among each other), replayed in order once the metadata is there.
        self._waiting: dict[str, list[bytes]] = {}

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
        pipeline = PaperTradingPipeline.from_metadata(metadata)
        pipeline.restore_state(snapshot.payload)
        self._pipelines[metadata.run_id] = pipeline

    def _snapshot(self, run_id: str, pipeline: PaperTradingPipeline, at: tuple[int, int]) -> None:
        assert self._snapshots is not None
        snapshot = Snapshot(
            run_id=run_id,
            partition=at[0],
            offset=at[1] + 1,  # where to read from: the run's next candle is no earlier
            candles=pipeline.candles,
            code_version=self._code_version,
            payload=pipeline.export_state(),
        )
        try:
            self._snapshots.write(snapshot)
        except OSError as exc:
            # A snapshot only shortens a restart; the engine goes on without them.
            logger.warning("snapshots stopped: %s", exc)
            self._snapshots = None

    def mark_finished(self, run_id: str) -> None:
        """A run whose ``run_completed`` is already in the log: its input is done with."""
        self._pipelines.pop(run_id, None)
        self._waiting.pop(run_id, None)
        self.finished.add(run_id)

    def on_run_metadata(self, value: bytes) -> list[Event]:
        metadata = decode(value)
        if not isinstance(metadata, BacktestRunMetadata):
            return []  # run_completed and other run events are outputs, not inputs
        if metadata.run_id in self._pipelines or metadata.run_id in self.finished:
            return []  # redelivered: the run is already under way
        pipeline = PaperTradingPipeline.from_metadata(metadata)
        self._pipelines[metadata.run_id] = pipeline
        events = pipeline.begin(metadata)
        for waiting in self._waiting.pop(metadata.run_id, []):
            events.extend(self.on_market_data(waiting))
        return events

    def knows(self, run_id: str) -> bool:
        return run_id in self._pipelines

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
        pipeline = self._pipelines.get(run_id)
        if pipeline is None:
            if run_id in self.finished:
                return []  # a redelivered record of a finished run
            if wait:
                self._waiting.setdefault(run_id, []).append(value)
                return []
            raise EngineError(f"market data for run {run_id!r} before its run_metadata")
        kind = payload.get("type")
        if kind == "market_data":
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
            if (
                at is not None
                and self._snapshots is not None
                and pipeline.candles % self._every == 0
            ):
                self._snapshot(run_id, pipeline, at)
            return events
        if kind == "market_data_completed":
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
            final = pipeline.finish(marker.dead_letters)
            del self._pipelines[run_id]
            self.finished.add(run_id)
            return final
        raise EngineError(f"unexpected {kind!r} record in market_data")
