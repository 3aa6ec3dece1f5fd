"""The staged topology's three agents, as cores that take records and give records.

Each core is what one stage agent does with its input, with no transport: records (the
JSON values of the log) go in through ``take``, and ``drain`` gives back the events to
write and the control records to send. The faust apps (``streams.stage_agents``) feed
them from Kafka; tests feed them directly, in any order across topics.

The hand-off, and why it gives the fused engine's events whatever the timing:

- SE (``SignalCore``) folds ``market_data`` into signals. After each batch it sends, per
  run, a ``signals_through`` control record: the candles it has seen and the signals it
  has written for them.
- RE (``RiskCore``) decides candle n of a run only once SE has passed n *and* every signal
  SE counted has arrived, so a missing signal is never taken for no signal. When an order
  is due at candle n (an approved order waits for its symbol's next candle), RE sends a
  ``fill_due`` record naming the order and the candle (its number, time and open, as
  ``market_data`` has them) and waits for XS's result before it folds the candle: the
  portfolio RE decides with is the one after that candle's fills, as in the fused engine.
- XS (``ExecutionCore``) fills orders in the order RE says they are due, with a ledger
  folded from its own results; at a run's end RE sends ``expire`` with the orders left
  without a next candle, which XS refuses in that order.

Each decision depends only on the contents of records, never on when one arrives, and
every stage writes only its own event types with derived ids and dense sequences. A core
fed again with records it has seen (a restart refolding the log, a redelivery) skips them
by sequence or id; ``OutputFilter`` keeps what the log already holds from being written
twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from domain.events import (
    BacktestRunMetadata,
    Event,
    MarketDataCompleted,
    MarketDataEvent,
    SimulatedOrder,
    SimulatedTrade,
    StrategySignal,
    candle_of,
    interval_ms,
)
from domain.stages import (
    EXECUTION_TYPES,
    SIGNAL_TYPES,
    ExecutionStage,
    RiskStage,
    SignalStage,
    StageError,
)
from streams import topics
from streams.codec import decode, decode_json
from streams.run_driver import OutputFilter

__all__ = [
    "STAGES",
    "ExecutionCore",
    "RiskCore",
    "SignalCore",
    "StageCore",
    "StageError",
]

SIGNALS_THROUGH = "signals_through"
FILL_DUE = "fill_due"
EXPIRE = "expire"

Control = dict[str, Any]


def _number_of(event_id: str) -> int:
    """The sequence in a derived id (``run:type:sequence``)."""
    return int(event_id.rsplit(":", 1)[1])


class StageCore:
    """What the three cores share: output gathering, filtering and the finished runs."""

    # The topics the stage consumes.
    inputs: tuple[str, ...] = ()
    # The topics a restart refolds, in this order (``market_data``, the long one, last:
    # by then everything its candles wait for is there).
    refold: tuple[str, ...] = ()
    # The topics whose records tell the stage what it has already written.
    outputs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.output = OutputFilter({})
        self.finished: set[str] = set()
        self._events: list[Event] = []
        self._control: list[Control] = []
        self.records_in = 0

    def mark_written(self, run_id: str, kind: str, sequence: int) -> None:
        """An event found in the log at start (of this stage's types, or any other of its
        output topics, which are ignored): never written again."""
        self.output.written(run_id, kind, sequence)

    def take(self, value: bytes) -> None:
        raise NotImplementedError

    def take_all(self, values: Iterable[bytes]) -> None:
        for value in values:
            self.take(value)

    def backlog(self) -> int:
        """Input records held, waiting for others."""
        return 0

    def drain(self) -> tuple[list[Event], list[Control]]:
        """The events to write (less those the log holds) and the control records to
        send, since the last call."""
        events, control = self._events, self._control
        self._events, self._control = [], []
        return self.output.fresh(events), control

    def _emit(self, events: Iterable[Event]) -> None:
        self._events.extend(events)

    def _send(self, record: Control) -> None:
        self._control.append(record)


# -- SE -----------------------------------------------------------------------------------


@dataclass
class _SignalRun:
    stage: SignalStage
    completed: bool = False
    moved: bool = False  # candles taken since the last signals_through


class SignalCore(StageCore):
    """SE: ``runs`` and ``market_data`` in; ``signals`` and ``signals_through`` out."""

    inputs = (topics.RUNS, topics.MARKET_DATA)
    refold = (topics.RUNS, topics.STAGE_CONTROL, topics.MARKET_DATA)
    outputs = (topics.SIGNALS,)

    def __init__(self) -> None:
        super().__init__()
        self._runs: dict[str, _SignalRun] = {}
        self._waiting: dict[str, list[dict[str, Any]]] = {}
        self._steps: dict[str, int] = {}
        self._signals: dict[str, int] = {}

    def take(self, value: bytes) -> None:
        self.records_in += 1
        payload = decode_json(value)
        kind = payload.get("type")
        run_id = str(payload.get("run_id"))
        if run_id in self.finished:
            return
        if kind == "run_metadata":
            self._begin(value)
        elif kind in ("market_data", "market_data_completed"):
            run = self._runs.get(run_id)
            if run is None:
                self._waiting.setdefault(run_id, []).append(payload)
            else:
                self._market_data(run, payload)
        elif kind == SIGNALS_THROUGH and payload.get("completed"):
            # Its own record, found at start: the run's signals are all written.
            self.finished.add(run_id)
            self._runs.pop(run_id, None)
            self._waiting.pop(run_id, None)

    def mark_written(self, run_id: str, kind: str, sequence: int) -> None:
        super().mark_written(run_id, kind, sequence)
        if kind == "signal":
            self._signals[run_id] = max(self._signals.get(run_id, 0), sequence + 1)

    def _begin(self, value: bytes) -> None:
        metadata = decode(value)
        if not isinstance(metadata, BacktestRunMetadata) or metadata.run_id in self._runs:
            return
        run = self._runs[metadata.run_id] = _SignalRun(SignalStage.from_metadata(metadata))
        for payload in self._waiting.pop(metadata.run_id, []):
            self._market_data(run, payload)

    def _market_data(self, run: _SignalRun, payload: dict[str, Any]) -> None:
        stage = run.stage
        if payload["type"] == "market_data_completed":
            if int(payload.get("candles", -1)) != stage.candles:
                raise StageError(
                    f"run {stage.run_id}: input ended after {payload.get('candles')} candles "
                    f"but {stage.candles} arrived"
                )
            run.completed = run.moved = True
            return
        sequence = int(payload.get("sequence", -1))
        if sequence < stage.candles:
            return  # seen before
        if sequence > stage.candles:
            raise StageError(f"run {stage.run_id}: candle {stage.candles} is missing")
        event = MarketDataEvent.model_validate(payload)
        step = self._steps.get(event.interval)
        if step is None:
            step = self._steps[event.interval] = interval_ms(event.interval)
        signal = stage.on_candle(candle_of(event, step))
        run.moved = True
        if signal is not None:
            self._emit((signal,))
            self._signals[stage.run_id] = signal.sequence + 1

    def drain(self) -> tuple[list[Event], list[Control]]:
        for run_id, run in list(self._runs.items()):
            if not run.moved:
                continue
            run.moved = False
            self._send(
                {
                    "type": SIGNALS_THROUGH,
                    "run_id": run_id,
                    "candles": run.stage.candles,
                    "signals": self._signals.get(run_id, 0),
                    "completed": run.completed,
                }
            )
            if run.completed:
                del self._runs[run_id]
                self.finished.add(run_id)
        return super().drain()


# -- RE -----------------------------------------------------------------------------------


@dataclass
class _RiskRun:
    stage: RiskStage
    # Candles taken and not yet folded, as their records: compact while RE waits on SE or
    # XS, which a long run's candles may have to do by the ten thousand.
    candles: deque[bytes] = field(default_factory=deque)
    buffered: int = 0  # the next candle number to buffer
    signals: dict[int, StrategySignal] = field(default_factory=dict)  # by candle number
    signals_seen: int = 0  # signals 0 .. signals_seen - 1 have arrived
    progress: deque[tuple[int, int]] = field(default_factory=deque)  # SE's (candles, signals)
    through: int = 0  # candles SE has passed whose signals are all here
    results: dict[str, SimulatedTrade] = field(default_factory=dict)  # by order event id
    results_seen: int = 0
    requested: set[str] = field(default_factory=set)
    end: MarketDataCompleted | None = None


_RISK_INPUTS = frozenset(
    {"market_data", "market_data_completed", "signal", "order_result", SIGNALS_THROUGH}
)


_NOT_RISKS = SIGNAL_TYPES | EXECUTION_TYPES


class RiskCore(StageCore):
    """RE with PSM: ``runs``, ``market_data``, ``signals``, ``order_results`` and SE's
    progress in; decisions, orders, alerts, portfolio and run events out, and fill-due and
    expire records for XS."""

    inputs = (
        topics.RUNS,
        topics.STAGE_CONTROL,
        topics.SIGNALS,
        topics.ORDER_RESULTS,
        topics.MARKET_DATA,
    )
    refold = inputs
    outputs = (
        topics.RISK_DECISIONS,
        topics.ORDERS,
        topics.ALERTS,
        topics.PORTFOLIO,
        topics.RUNS,
    )

    def __init__(self) -> None:
        super().__init__()
        self._runs: dict[str, _RiskRun] = {}
        self._early: dict[str, list[bytes]] = {}  # records before their run's metadata
        self._steps: dict[str, int] = {}

    def take(self, value: bytes) -> None:
        self.records_in += 1
        payload = decode_json(value)
        kind = payload.get("type")
        run_id = str(payload.get("run_id"))
        if run_id in self.finished:
            return
        if kind == "run_metadata":
            self._begin(value)
            return
        if kind == "run_completed":
            self._finished(run_id)
            return
        run = self._runs.get(run_id)
        if run is None:
            if kind in _RISK_INPUTS:
                self._early.setdefault(run_id, []).append(value)
            return
        self._take(run, kind, payload, value)
        self._advance(run)

    def backlog(self) -> int:
        return sum(len(run.candles) for run in self._runs.values())

    def _take(self, run: _RiskRun, kind: Any, payload: dict[str, Any], value: bytes) -> None:
        if kind == "market_data":
            sequence = int(payload.get("sequence", -1))
            if sequence < run.buffered:
                return
            if sequence > run.buffered:
                raise StageError(f"run {run.stage.run_id}: candle {run.buffered} is missing")
            run.candles.append(value)
            run.buffered += 1
        elif kind == "market_data_completed":
            marker = decode(value)
            assert isinstance(marker, MarketDataCompleted)
            run.end = marker
        elif kind == "signal":
            signal = decode(value)
            assert isinstance(signal, StrategySignal)
            if signal.sequence >= run.signals_seen:
                number = _number_of(str(signal.causation_id))
                if number >= run.stage.candles:
                    run.signals[number] = signal
                run.signals_seen = signal.sequence + 1
                self._settle_progress(run)
        elif kind == "order_result":
            result = decode(value)
            assert isinstance(result, SimulatedTrade)
            if result.sequence >= run.results_seen:
                run.results_seen = result.sequence + 1
                run.results[str(result.causation_id)] = result
        elif kind == SIGNALS_THROUGH:
            run.progress.append((int(payload["candles"]), int(payload["signals"])))
            self._settle_progress(run)

    @staticmethod
    def _settle_progress(run: _RiskRun) -> None:
        # SE's word that it passed n candles counts once the signals it wrote are here.
        progress = run.progress
        while progress and progress[0][1] <= run.signals_seen:
            run.through = max(run.through, progress.popleft()[0])

    def _begin(self, value: bytes) -> None:
        metadata = decode(value)
        if not isinstance(metadata, BacktestRunMetadata) or metadata.run_id in self._runs:
            return
        stage = RiskStage.from_metadata(metadata)
        run = self._runs[metadata.run_id] = _RiskRun(stage)
        self._own(stage.begin(metadata))
        for early in self._early.pop(metadata.run_id, []):
            payload = decode_json(early)
            self._take(run, payload.get("type"), payload, early)
        self._advance(run)

    def _finished(self, run_id: str) -> None:
        self.finished.add(run_id)
        self._runs.pop(run_id, None)
        self._early.pop(run_id, None)

    def _own(self, events: list[Event]) -> None:
        self._emit(
            e for e in events if e.type not in SIGNAL_TYPES and e.type not in EXECUTION_TYPES
        )

    def _advance(self, run: _RiskRun) -> None:
        stage = run.stage
        while run.candles and run.through > stage.candles:
            event = MarketDataEvent.model_validate(decode_json(run.candles[0]))
            due = stage.due_order(event.symbol)
            result = None
            if due is not None:
                result = run.results.pop(due.event_id, None)
                if result is None:
                    if due.event_id not in run.requested:
                        run.requested.add(due.event_id)
                        self._send(
                            {
                                "type": FILL_DUE,
                                "run_id": stage.run_id,
                                "order": due.event_id,
                                "candle": stage.candles,
                                "timestamp": event.timestamp,
                                "open": event.open,
                            }
                        )
                    return
                run.requested.discard(due.event_id)
            step = self._steps.get(event.interval)
            if step is None:
                step = self._steps[event.interval] = interval_ms(event.interval)
            signal = run.signals.pop(stage.candles, None)
            run.candles.popleft()
            self._own(stage.on_staged_candle(candle_of(event, step), signal, result))
        end = run.end
        if end is not None and stage.candles == end.candles and run.through >= end.candles:
            self._finish(run, end)

    def _finish(self, run: _RiskRun, end: MarketDataCompleted) -> None:
        events = run.stage.finish(end.dead_letters)
        expired = [e for e in events if isinstance(e, SimulatedTrade)]
        if expired:
            self._send(
                {
                    "type": EXPIRE,
                    "run_id": run.stage.run_id,
                    "orders": [e.causation_id for e in expired],
                    "timestamp": expired[0].timestamp,
                }
            )
        self._own(events)
        self._finished(run.stage.run_id)


# -- XS -----------------------------------------------------------------------------------


@dataclass
class _ExecutionRun:
    stage: ExecutionStage
    orders: dict[str, SimulatedOrder] = field(default_factory=dict)  # waiting, by event id
    done: set[str] = field(default_factory=set)  # orders with a result
    due: deque[Control] = field(default_factory=deque)


class ExecutionCore(StageCore):
    """XS: ``runs``, ``orders`` and RE's fill-due and expire records in; ``order_results``
    out. At start it folds the results it wrote (``order_results`` comes before the
    orders in ``inputs``) and so stands where it stood."""

    inputs = (topics.RUNS, topics.ORDERS, topics.STAGE_CONTROL)
    refold = (topics.RUNS, topics.ORDER_RESULTS, topics.ORDERS, topics.STAGE_CONTROL)
    outputs = (topics.ORDER_RESULTS,)

    def __init__(self) -> None:
        super().__init__()
        self._runs: dict[str, _ExecutionRun] = {}
        self._early: dict[str, list[bytes]] = {}

    def take(self, value: bytes) -> None:
        self.records_in += 1
        payload = decode_json(value)
        kind = payload.get("type")
        run_id = str(payload.get("run_id"))
        if kind == "run_metadata":
            metadata = decode(value)
            if isinstance(metadata, BacktestRunMetadata) and run_id not in self._runs:
                run = self._runs[run_id] = _ExecutionRun(ExecutionStage.from_metadata(metadata))
                for early in self._early.pop(run_id, []):
                    self._take(run, decode_json(early), early)
                self._advance(run)
            return
        if kind not in ("order", "order_result", FILL_DUE, EXPIRE):
            return
        held = self._runs.get(run_id)
        if held is None:
            self._early.setdefault(run_id, []).append(value)
            return
        self._take(held, payload, value)
        self._advance(held)

    def _take(self, run: _ExecutionRun, payload: dict[str, Any], value: bytes) -> None:
        kind = payload["type"]
        if kind == "order":
            order = decode(value)
            assert isinstance(order, SimulatedOrder)
            if order.event_id not in run.done:
                run.orders[order.event_id] = order
        elif kind == "order_result":
            result = decode(value)
            assert isinstance(result, SimulatedTrade)
            if result.sequence == run.stage.results:  # one of its own, read back
                run.stage.fold(result)
                run.done.add(str(result.causation_id))
                run.orders.pop(str(result.causation_id), None)
        elif kind == FILL_DUE:
            if payload["order"] not in run.done:
                run.due.append(payload)
        elif kind == EXPIRE:
            run.due.append(payload)

    def _advance(self, run: _ExecutionRun) -> None:
        stage = run.stage
        while run.due:
            action = run.due[0]
            if action["type"] == FILL_DUE:
                order_id = action["order"]
                if order_id in run.done:
                    run.due.popleft()
                    continue
                order = run.orders.get(order_id)
                if order is None:
                    return  # due before the order itself arrived
                result = stage.execute(order, int(action["timestamp"]), float(action["open"]))
            else:
                waiting = [o for o in action["orders"] if o not in run.done]
                if any(o not in run.orders for o in waiting):
                    return
                for order_id in waiting:
                    result = stage.expire(run.orders.pop(order_id), int(action["timestamp"]))
                    run.done.add(order_id)
                    self._emit((result,))
                run.due.popleft()
                continue
            run.due.popleft()
            run.done.add(order_id)
            del run.orders[order_id]
            self._emit((result,))


STAGES: dict[str, type[StageCore]] = {
    "signal": SignalCore,
    "risk": RiskCore,
    "execution": ExecutionCore,
}
