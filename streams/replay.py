"""Replaying a range of ``market_data`` offsets: the engine again, from the state at A.

``replay_market_data`` re-runs a run's engine over the candles at offsets A..B (both
included) of one ``market_data`` partition, into a run of its own: the state as it was
before the candle at A comes from the nearest snapshot at or before it (or from the run's
first candle), the candles between the snapshot and A are folded without output, and the
candles A..B are folded with it. The replay's events (copies of the candles included) go
to the log under the replay's run id, so they never mix with the original's; their
sequences continue where the original's stood at A, which is what makes the two
comparable event by event.

The range covers one run: the run of the candle at A. Records of other runs in the range
are passed over. A range that reaches the run's end-of-input marker ends the replay as the
run ended (pending orders rejected, final statistics); one that starts at the run's first
candle also replays the run's opening state events. A replay that stops short of the end
is closed with a ``run_completed`` of its own, which is not compared.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import msgspec

from domain.events import (
    BacktestRunMetadata,
    Event,
    MarketDataEvent,
    StrategySignal,
)
from domain.pipeline import PaperTradingPipeline
from domain.risk import RiskConfig, RiskEngine
from domain.run_config import BacktestConfig, run_metadata_event
from domain.strategies.base import SignalIntent
from domain.strategies.recorded import RecordedSignals
from streams import topics
from streams.backtest import choose_run_id
from streams.code_identity import code_version
from streams.codec import (
    DecodeError,
    decode,
    decode_view,
    decode_views,
    encode,
    relabeller,
)
from streams.log_port import EventLog, Record, SharedWriting
from streams.market_data_publisher import MarketDataPublisher, can_fork
from streams.run_driver import RunEngine
from streams.run_writer import RunIdError, RunWriter
from streams.snapshots import SnapshotStore

# The event types the engine writes (a replay's output); the others are its inputs.
ENGINE_TYPES = (
    "signal",
    "risk_decision",
    "order",
    "order_result",
    "position_state",
    "portfolio_snapshot",
    "risk_state",
    "alert",
    "intensity_changed",
    "run_completed",
)
# The topics the engine writes; a replay's output is compared with the original's there.
OUTPUT_TOPICS = tuple(dict.fromkeys(topics.TOPIC_OF_EVENT[t] for t in ENGINE_TYPES))


class ReplayError(ValueError):
    """A replay that cannot be done as asked; the message is one line for the user."""


@dataclass
class Divergence:
    topic: str
    offset: int | None  # the original's offset; None if the original has no such event
    original: dict[str, Any] | None
    replayed: dict[str, Any] | None


@dataclass
class Comparison:
    events: int = 0  # replayed events compared
    identical: bool = True
    first_divergence: Divergence | None = None
    trades_added: list[dict[str, Any]] = field(default_factory=list)
    trades_removed: list[dict[str, Any]] = field(default_factory=list)
    fills: tuple[int, int] = (0, 0)  # original, replay
    final_equity: tuple[float | None, float | None] = (None, None)  # original, replay
    max_drawdown_pct: tuple[float | None, float | None] = (None, None)


@dataclass
class ReplayOutcome:
    run_id: str
    original_run_id: str
    topic: str  # of the range: market_data or signals
    partition: int
    from_offset: int
    to_offset: int
    candles: int
    restored_from: int | None  # the candle count of the snapshot used (None: the first)
    refolded: int  # candles folded between the snapshot and A, without output
    comparison: Comparison


def _decode(record: Record) -> Event:
    try:
        return decode(record.value)
    except DecodeError as exc:
        raise ReplayError(f"market_data offset {record.offset} cannot be read: {exc}") from None


def _metadata(log: EventLog, run_id: str) -> BacktestRunMetadata:
    partition = topics.partition_for(run_id, log.partitions(topics.RUNS))
    for record in log.read(topics.RUNS, partition):
        if record.key == run_id:
            event = decode(record.value)
            if isinstance(event, BacktestRunMetadata):
                return event
    raise ReplayError(f"run {run_id!r} has no run_metadata in the log: nothing to replay with")


def check_range(log: EventLog, topic: str, partition: int, first: int, last: int) -> None:
    if topic not in log.topic_names():
        raise ReplayError(f"unknown topic {topic!r}")
    partitions = log.partitions(topic)
    if not 0 <= partition < partitions:
        raise ReplayError(f"topic {topic!r} has no partition {partition} (0..{partitions - 1})")
    if first > last:
        raise ReplayError(f"--from-offset {first} is after --to-offset {last}")
    end = log.end_offset(topic, partition)
    if first < 0 or last >= end:
        raise ReplayError(
            f"offsets {first}..{last} are outside {topic}/{partition}, which holds 0..{end - 1}"
        )


@dataclass
class _State:
    """A run's engine as it was before one of its candles, and how it got there."""

    engine: RunEngine
    restored_from: int | None
    refolded: int
    begin_events: list[Event]

    @property
    def pipeline(self) -> PaperTradingPipeline:
        return self.engine.pipeline


def _state_before(
    log: EventLog,
    snapshots: SnapshotStore | None,
    metadata: BacktestRunMetadata,
    partition: int,
    run_start: int,
    candle: int,
) -> _State:
    """The pipeline of ``metadata``'s run before its candle number ``candle``: restored from
    the nearest snapshot at or before it, the candles after the snapshot refolded."""
    original = metadata.run_id
    engine = RunEngine(metadata)
    pipeline = engine.pipeline
    snapshot = None
    if snapshots is not None:
        snapshot = snapshots.nearest(original, candle, code_version())
        if snapshot is not None and (
            snapshot.partition != partition or snapshot.offset - snapshot.candles != run_start
        ):
            snapshot = None  # not this run's candles where they are now: do not trust it
    begin_events: list[Event] = []
    if snapshot is not None:
        engine.restore(snapshot)
        refold_from = snapshot.offset
    else:
        begin_events = engine.begin()
        refold_from = run_start
    refolded = 0
    batches = _run_batches(log, partition, refold_from, run_start + candle, original)
    for _offsets, _values, events in batches:
        for event in events:
            if event.type == "market_data":
                pipeline.on_candle(event)
                refolded += 1
    if pipeline.candles != candle:
        raise ReplayError(
            f"the run's candles are not where they should be (folded {pipeline.candles} "
            f"before candle {candle})"
        )
    return _State(engine, snapshot.candles if snapshot else None, refolded, begin_events)


def _run_start(
    log: EventLog, snapshots: SnapshotStore | None, metadata: BacktestRunMetadata, partition: int
) -> int:
    """The market_data offset of the run's first candle (its candle n is at start + n)."""
    run_id = metadata.run_id
    found = None
    if snapshots is not None:
        snapshot = snapshots.nearest(run_id, 2**62, code_version())
        if snapshot is not None and snapshot.partition == partition:
            found = snapshot.offset - snapshot.candles
    if found is None:
        start = log.offset_for_time(topics.MARKET_DATA, partition, metadata.timestamp)
        for record in log.read(topics.MARKET_DATA, partition, start):
            if record.key == run_id:
                event = _decode(record)
                found = record.offset - event.sequence
                break
    if found is not None:
        for record in log.read(topics.MARKET_DATA, partition, found, found + 1):
            event = _decode(record)
            if record.key == run_id and isinstance(event, MarketDataEvent) and event.sequence == 0:
                return found
    raise ReplayError(f"run {run_id!r} has no candles in market_data/{partition}")


def replay_market_data(
    log: EventLog,
    snapshots: SnapshotStore | None,
    partition: int,
    from_offset: int,
    to_offset: int,
    run_id: str | None = None,
) -> ReplayOutcome:
    """Replay the candles at ``from_offset..to_offset`` into a new run; compare."""
    check_range(log, topics.MARKET_DATA, partition, from_offset, to_offset)
    head = next(log.read(topics.MARKET_DATA, partition, from_offset, from_offset + 1))
    first_event = _decode(head)
    if not isinstance(first_event, MarketDataEvent):
        raise ReplayError(
            f"market_data offset {from_offset} is not a candle ({first_event.type}); "
            "a replay starts at a candle"
        )
    original = first_event.run_id
    metadata = _metadata(log, original)
    new_run = choose_run_id(log, run_id, f"{original}-replay-{from_offset}-{to_offset}")
    run_start = from_offset - first_event.sequence  # the run's candle n is at run_start + n
    state = _state_before(log, snapshots, metadata, partition, run_start, first_event.sequence)
    return _replay(
        log,
        state,
        metadata,
        _as_run(metadata, original, new_run),
        new_run,
        partition,
        range(from_offset, to_offset + 1),
        (topics.MARKET_DATA, partition, from_offset, to_offset),
        stop_after=None,
    )


def replay_signals(
    log: EventLog,
    snapshots: SnapshotStore | None,
    partition: int,
    from_offset: int,
    to_offset: int,
    risk: RiskConfig,
    run_id: str | None = None,
) -> ReplayOutcome:
    """Re-run the Risk Engine and the simulator over the signals at ``from_offset..to_offset``
    with ``risk``: the same signals at the same candles, fills at the original candles."""
    check_range(log, topics.SIGNALS, partition, from_offset, to_offset)
    records = list(log.read(topics.SIGNALS, partition, from_offset, to_offset + 1))
    head = _decode(records[0])
    if not isinstance(head, StrategySignal):
        raise ReplayError(f"signals offset {from_offset} is not a signal ({head.type})")
    original = head.run_id
    signals = [
        event
        for record in records
        if record.key == original and isinstance(event := _decode(record), StrategySignal)
    ]
    metadata = _metadata(log, original)
    config = BacktestConfig.model_validate(metadata.config)
    new_run = choose_run_id(log, run_id, f"{original}-risk-replay-{from_offset}-{to_offset}")
    md_partition = topics.partition_for(original, log.partitions(topics.MARKET_DATA))
    run_start = _run_start(log, snapshots, metadata, md_partition)
    first_candle, last_candle = (_candle_of(signal) for signal in (signals[0], signals[-1]))
    state = _state_before(log, snapshots, metadata, md_partition, run_start, first_candle)
    intents = {
        (s.symbol, s.timestamp): SignalIntent(s.direction, s.reason, s.strength) for s in signals
    }
    state.pipeline.switch_to(lambda: RecordedSignals(intents), RiskEngine(risk))
    replay_metadata = run_metadata_event(
        new_run,
        timestamp=metadata.timestamp,
        code_version=metadata.code_version,
        config=config.model_copy(update={"risk": risk}),
        data_sources=list(metadata.data_sources),
    )
    end = log.end_offset(topics.MARKET_DATA, md_partition)
    return _replay(
        log,
        state,
        metadata,
        replay_metadata,
        new_run,
        md_partition,
        range(run_start + first_candle, end),
        (topics.SIGNALS, partition, from_offset, to_offset),
        stop_after=last_candle,
    )


def _candle_of(signal: StrategySignal) -> int:
    """The number of the candle whose close gave ``signal`` (from its causation id)."""
    cause = signal.causation_id or ""
    prefix = f"{signal.run_id}:market_data:"
    if not cause.startswith(prefix) or not cause[len(prefix) :].isdigit():
        raise ReplayError(f"signal {signal.event_id} does not name the candle that caused it")
    return int(cause[len(prefix) :])


# Candles decoded and replayed per step; events are written and compared as they come.
REPLAY_BATCH = 4096


class _Folding:
    """A replay's fold of the run's candles: how far it got, and why it stopped."""

    def __init__(self, state: _State, stop_after: int | None) -> None:
        self._state = state
        self._stop_after = stop_after
        self._on_candle = state.pipeline.on_candle
        self.candles = 0
        self.ended = False  # the run's end marker was folded: the replay ended as it did
        self.stopped = False  # a signals replay went past its range with nothing pending
        self.last_candle_ts: int | None = None
        self.boundary_ts: int | None = None  # after the candle that fills the last orders

    def fold(self, offsets: list[int], decoded: list[Any]) -> tuple[list[Event], int]:
        """Fold one batch of the run's records; the events, and how many were candles
        folded (the batch's first ones)."""
        if self._stop_after is None and _all_candles(decoded):
            # The common case, kept lean: every record a candle, folded as decoded.
            events: list[Event] = []
            for out in map(self._on_candle, decoded):
                if out:
                    events.extend(out)
            self.candles += len(decoded)
            self.last_candle_ts = decoded[-1].timestamp
            return events, len(decoded)
        return self._fold_records(offsets, decoded)

    def _fold_records(self, offsets: list[int], decoded: list[Any]) -> tuple[list[Event], int]:
        events: list[Event] = []
        taken = 0
        stop_after, pipeline = self._stop_after, self._state.pipeline
        for offset, event in zip(offsets, decoded, strict=True):
            if event.type == "market_data_completed":
                events.extend(self._state.engine.finish(event.dead_letters))
                self.ended = True
                break
            if event.type != "market_data":
                raise ReplayError(f"market_data offset {offset} holds a {event.type}")
            if (
                stop_after is not None
                and event.sequence > stop_after + 1
                and not pipeline.has_pending_orders
            ):
                self.stopped = True
                break
            events.extend(self._on_candle(event))
            self.candles += 1
            taken += 1
            self.last_candle_ts = event.timestamp
            if stop_after is not None and event.sequence == stop_after + 1:
                # The candle that fills the range's last orders: its events are compared
                # whatever the rules (a fill the replay does not make is a trade removed).
                self.boundary_ts = event.timestamp + 1
        return events, taken


class _CandleCopies:
    """Where a replay's copies of the candles go: encoded and appended by a second
    process where the log and the platform allow (as a backtest's candles are), else
    from this one."""

    def __init__(
        self, log: EventLog, writer: RunWriter, original: str, new_run: str, first: int
    ) -> None:
        self._writer = writer
        self._original = original
        self._as_new_run = relabeller(original, new_run)
        self._publisher: MarketDataPublisher | None = None
        if isinstance(log, SharedWriting) and can_fork():
            self._publisher = MarketDataPublisher(log, new_run, first_sequence=first)

    def write(self, stamps: list[int], values: list[bytes]) -> None:
        if self._publisher is not None:
            self._publisher.publish_copies(stamps, values, self._original)
        elif values:
            copies = self._as_new_run(b"\n".join(values)).split(b"\n")
            self._writer.market_data_records(list(zip(stamps, copies, strict=True)))

    def finish(self) -> None:
        if self._publisher is not None:
            self._publisher.finish(trailer=[])
            self._publisher = None

    def abort(self) -> None:
        if self._publisher is not None:
            self._publisher.abort()


def _replay(
    log: EventLog,
    state: _State,
    metadata: BacktestRunMetadata,
    replay_metadata: BacktestRunMetadata,
    new_run: str,
    partition: int,
    offsets: range,
    requested: tuple[str, int, int, int],
    stop_after: int | None,
) -> ReplayOutcome:
    """Fold the run's candles at ``offsets`` with output, into ``new_run``. With
    ``stop_after`` (a signals replay: the candle of the range's last signal), go on through
    the candle after it, which fills the orders of the last signals, and then until no
    order is pending."""
    original = metadata.run_id
    topic, requested_partition, first_offset, last_offset = requested
    pipeline = state.pipeline
    first_candle = pipeline.candles
    # Where each type's sequence stood when the range began (before the opening events,
    # which a range from the first candle replays too).
    before = {} if first_candle == 0 else pipeline.sequence_positions()
    pipeline.continue_as(new_run)  # from here the pipeline writes the replay's own run
    writer = RunWriter(log, new_run)
    writer.publish([replay_metadata])
    # The range's events are no older than the candle before it (the last one folded).
    since = pipeline.last_timestamp if first_candle else None
    comparer = _Comparer(log, original, new_run, before, since)
    if first_candle == 0:
        opening = [(e, encode(e)) for e in _relabel(state.begin_events, original, new_run)]
        writer.publish_encoded(opening)
        comparer.add_all(opening)
    folding = _Folding(state, stop_after)
    copies = _CandleCopies(log, writer, original, new_run, first_candle)
    try:
        for record_offsets, values, decoded in _run_batches(
            log, partition, offsets.start, offsets.stop, original
        ):
            events, taken = folding.fold(record_offsets, decoded)
            # The copies are the original candles' bytes under the replay's run id: the
            # very records a backtest of these candles under that id would write.
            copies.write([event.timestamp for event in decoded[:taken]], values[:taken])
            encoded = [(event, encode(event)) for event in events]
            writer.publish_encoded(encoded)
            writer.flush_if_large()
            comparer.add_all(encoded)
            if folding.ended or folding.stopped:
                break
        copies.finish()
    except BaseException:
        copies.abort()
        raise
    ended, candles = folding.ended, folding.candles
    boundary_ts, last_candle_ts = folding.boundary_ts, folding.last_candle_ts
    until = None if ended else boundary_ts or last_candle_ts
    comparison = comparer.result(until)
    if not ended:
        writer.publish(state.engine.finish(0))  # the replay's run ends here; not compared
    writer.flush()
    log.commit()
    return ReplayOutcome(
        run_id=new_run,
        original_run_id=original,
        topic=topic,
        partition=requested_partition,
        from_offset=first_offset,
        to_offset=last_offset,
        candles=candles,
        restored_from=state.restored_from,
        refolded=state.refolded,
        comparison=comparison,
    )


def _run_batches(
    log: EventLog, partition: int, start: int, stop: int, run_id: str
) -> Iterator[tuple[list[int], list[bytes], list[Any]]]:
    """The offsets, values and events of ``run_id``'s market_data records in ``start <=
    offset < stop``, about ``REPLAY_BATCH`` at a time (a log that stores batches gives
    their values without a record each). A market_data event is decoded as a
    ``domain.events.Bar`` the engine folds as it is."""
    offsets: list[int] = []
    values: list[bytes] = []
    for key, first, stored in log.read_values(topics.MARKET_DATA, partition, start, stop):
        if key != run_id:
            continue
        offsets.extend(range(first, first + len(stored)))
        values.extend(stored)
        if len(values) >= REPLAY_BATCH:
            yield offsets, values, _decode_many(offsets, values)
            offsets, values = [], []
    if values:
        yield offsets, values, _decode_many(offsets, values)


def _all_candles(events: list[Any]) -> bool:
    return bool(events) and {event.type for event in events} == {"market_data"}


def _decode_many(offsets: list[int], values: list[bytes]) -> list[Any]:
    """The events of market_data ``values``: views in one call where possible, else one
    by one (a value no model accepts is named by its offset)."""
    views = decode_views(values)
    if views is not None:
        return views
    return [
        _decode(Record(topics.MARKET_DATA, 0, offset, 0, "", value))
        for offset, value in zip(offsets, values, strict=True)
    ]


EventT = TypeVar("EventT", bound=Event)


def _relabel(events: list[Event], original: str, new_run: str) -> list[Event]:
    """Events the pipeline made for the original run, as the replay's run would have."""
    return [_as_run(event, original, new_run) for event in events]


def _as_run(event: EventT, run_from: str, run_to: str) -> EventT:
    """``event`` as run ``run_to`` would have written it (see ``codec.relabeller``)."""
    return type(event).model_validate_json(relabeller(run_from, run_to)(encode(event)))


class _Original(NamedTuple):
    offset: int
    event: Any  # a read-only view where one exists (streams.event_views), else the model
    raw: bytes


def _original_stream(
    log: EventLog, run_id: str, event_type: str, first: int, since: int | None
) -> Iterator[_Original]:
    """The original run's events of one type from sequence ``first`` on, with offsets;
    read from the first record at or after time ``since`` (no event of the range is older
    than the range's first candle), a stored batch at a time where the log allows."""
    topic = topics.TOPIC_OF_EVENT[event_type]
    if topic not in log.topic_names():
        return
    marker = b'"type":"' + event_type.encode() + b'"'
    partition = topics.partition_for(run_id, log.partitions(topic))
    start = 0 if since is None else log.offset_for_time(topic, partition, since)
    for key, first_offset, values in log.read_values(topic, partition, start):
        if key != run_id:
            continue
        picked = [(at, raw) for at, raw in enumerate(values, first_offset) if marker in raw]
        if not picked:
            continue
        raws = [raw for _, raw in picked]
        events = decode_views(raws) or [decode_view(raw) for raw in raws]
        for (offset, raw), event in zip(picked, events, strict=True):
            if event.type == event_type and event.sequence >= first:
                yield _Original(offset, event, raw)


def _as_json(event: Any) -> dict[str, Any]:
    if isinstance(event, Event):
        return event.model_dump(mode="json")
    return {"type": event.type, **msgspec.structs.asdict(event)}


# The event types the comparison's summary reads (fills, equity, drawdown).
_SUMMARISED = frozenset({"order_result", "portfolio_snapshot", "run_completed"})


class _Comparer:
    """Compares replayed events, as they come, with the original run's events of the same
    types and sequences (each type in sequence order on both sides). Equal events are
    equal bytes once the replay's run id is the original's: that is tried first, the
    models decide when the bytes differ (an original of an older schema version)."""

    def __init__(
        self,
        log: EventLog,
        original: str,
        replay: str,
        first: dict[str, int],
        since: int | None = None,
    ) -> None:
        """``first``: the sequence of each type at the range's start; ``since``: the time
        of its first candle (None: read the original's events from the beginning)."""
        self._since = since
        self._log = log
        self._original = original
        self._replay = replay
        self._as_original = relabeller(replay, original)
        self._first = first
        self._streams: dict[str, Iterator[_Original]] = {}
        self._peeked: dict[str, _Original | None] = {}
        self.comparison = Comparison()
        self._original_fills: list[Any] = []
        self._replayed_fills: list[Any] = []
        self._equity: list[float | None] = [None, None]
        self._drawdown: list[float | None] = [None, None]

    def _peek(self, event_type: str) -> _Original | None:
        if event_type not in self._streams:
            self._streams[event_type] = _original_stream(
                self._log, self._original, event_type, self._first.get(event_type, 0), self._since
            )
            self._peeked[event_type] = next(self._streams[event_type], None)
        return self._peeked[event_type]

    def _take(self, event_type: str) -> _Original:
        taken = self._peeked[event_type]
        assert taken is not None
        self._peeked[event_type] = next(self._streams[event_type], None)
        if event_type in _SUMMARISED:
            self._seen(0, taken.event)
        return taken

    def _seen(self, side: int, event: Any) -> None:
        event_type = event.type
        if event_type == "order_result":
            if event.status == "FILLED":
                (self._original_fills, self._replayed_fills)[side].append(event)
        elif event_type == "portfolio_snapshot":
            self._equity[side] = float(event.equity)
            self._drawdown[side] = max(self._drawdown[side] or 0.0, float(event.drawdown_pct))
        elif event_type == "run_completed":
            drawdown = event.statistics.max_drawdown_pct
            self._drawdown[side] = max(self._drawdown[side] or 0.0, drawdown)

    def _diverged(
        self, topic: str, offset: int | None, original: Any | None, replayed: Event | None
    ) -> None:
        comparison = self.comparison
        comparison.identical = False
        if comparison.first_divergence is None:
            comparison.first_divergence = Divergence(
                topic,
                offset,
                _as_json(original) if original is not None else None,
                replayed.model_dump(mode="json") if replayed is not None else None,
            )

    def add_all(self, events: Sequence[tuple[Event, bytes]]) -> None:
        """``events`` of the replay with their bytes as written (``codec.encode``)."""
        if not events:
            return
        # Relabelled in one pass: encoded JSON holds no newline of its own.
        as_original = self._as_original(b"\n".join(raw for _, raw in events)).split(b"\n")
        peeked = self._peeked
        for (event, _), raw in zip(events, as_original, strict=True):
            event_type = event.type
            ahead = peeked[event_type] if event_type in peeked else self._peek(event_type)
            if ahead is not None and ahead.raw == raw and ahead.event.sequence == event.sequence:
                # The same bytes: the same event (the common case, kept lean).
                self.comparison.events += 1
                self._take(event_type)
                if event_type in _SUMMARISED:
                    self._seen(1, event)
            else:
                self._add(event, raw)

    def _add(self, event: Event, as_original: bytes) -> None:
        """``event`` of the replay, and its bytes as the original run would hold them."""
        self.comparison.events += 1
        self._seen(1, event)
        event_type = event.type
        topic = topics.TOPIC_OF_EVENT[event_type]
        while (
            ahead := self._peek(event_type)
        ) is not None and ahead.event.sequence < event.sequence:
            missing = self._take(event_type)  # the original has it, the replay not
            self._diverged(topic, missing.offset, missing.event, None)
        ahead = self._peek(event_type)
        if ahead is None or ahead.event.sequence != event.sequence:
            self._diverged(topic, None, None, event)
            return
        found = self._take(event_type)
        if as_original == found.raw:
            return
        # Different bytes; the models decide (an original of an older schema version).
        replayed = decode(as_original).model_dump(mode="json")
        if decode(found.raw).model_dump(mode="json") != replayed:
            self._diverged(topic, found.offset, found.event, event)

    def result(self, until: int | None) -> Comparison:
        """The comparison; the original's events left over count as removed if they come
        before ``until`` (the later ones may be those of the candles after the range), or
        all of them when ``until`` is None (the range ran to the run's end)."""
        for event_type in ENGINE_TYPES:
            topic = topics.TOPIC_OF_EVENT[event_type]
            while (ahead := self._peek(event_type)) is not None and (
                until is None or ahead.event.timestamp < until
            ):
                missing = self._take(event_type)
                self._diverged(topic, missing.offset, missing.event, None)
        comparison = self.comparison
        comparison.trades_added, comparison.trades_removed = _trade_difference(
            self._original_fills, self._replayed_fills
        )
        comparison.fills = (len(self._original_fills), len(self._replayed_fills))
        comparison.final_equity = (self._equity[0], self._equity[1])
        comparison.max_drawdown_pct = (self._drawdown[0], self._drawdown[1])
        return comparison


def compare(
    log: EventLog,
    original: str,
    replay: str,
    replayed: list[Event],
    first: dict[str, int],
    until: int | None,
) -> Comparison:
    """``replayed`` (events of run ``replay``) against the original run's events of the
    same types and sequences, each type from ``first[type]``; see ``_Comparer.result``."""
    comparer = _Comparer(log, original, replay, first)
    comparer.add_all([(event, encode(event)) for event in replayed])
    return comparer.result(until)


def _trade_key(trade: Any) -> tuple[Any, ...]:
    return (trade.timestamp, trade.symbol, trade.side, trade.filled_quantity, trade.price)


def _trade_difference(
    original: list[Any], replayed: list[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    before = collections.Counter(_trade_key(t) for t in original)
    after = collections.Counter(_trade_key(t) for t in replayed)
    by_key = {_trade_key(t): t for t in (*original, *replayed)}
    added = [_trade_summary(by_key[k]) for k in sorted((after - before).elements())]
    removed = [_trade_summary(by_key[k]) for k in sorted((before - after).elements())]
    return added, removed


def _trade_summary(trade: Any) -> dict[str, Any]:
    return {
        "timestamp": trade.timestamp,
        "symbol": trade.symbol,
        "side": trade.side,
        "quantity": trade.filled_quantity,
        "price": trade.price,
    }


__all__ = [
    "Comparison",
    "Divergence",
    "ReplayError",
    "ReplayOutcome",
    "RunIdError",
    "check_range",
    "compare",
    "replay_market_data",
    "replay_signals",
]
