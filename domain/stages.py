"""The pipeline split at its stages, for the staged topology (one agent per stage).

- ``SignalStage`` (SE): a run's candles in, its signals out. It knows nothing of balances.
- ``ExecutionStage`` (XS): an order and the candle it fills at in, the order's result out.
  It keeps its own ledger of cash and holdings, folded from its own fills, to refuse what
  cannot be paid or is not held.
- ``RiskStage`` (RE with PSM): the fused pipeline with its two outside steps taken from the
  other stages: the signal SE gave on a candle, and the result XS gave for the order that
  fills at it. Everything else (the portfolio, the drawdown watch, the kill switch, the
  intensity, the statistics) runs here exactly as in ``PaperTradingPipeline``.

Each stage makes its own event types with its own sequencer; the steps they share with
the fused pipeline (``domain.steps``) make the same events, so a run split across the
stages writes what the fused pipeline writes, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable

from domain.events import (
    BacktestRunMetadata,
    Bar,
    Event,
    Sequencer,
    SimulatedOrder,
    SimulatedTrade,
    StrategySignal,
    event_id_for,
)
from domain.execution import CostModel
from domain.pipeline import PaperTradingPipeline
from domain.portfolio import Portfolio
from domain.run_config import BacktestConfig
from domain.steps import execute_order, expire_order, signal_event
from domain.strategies import Strategy, strategy_factory, strategy_params

# The event types each stage writes; the fused pipeline writes them all.
SIGNAL_TYPES: frozenset[str] = frozenset({StrategySignal.event_type})
EXECUTION_TYPES: frozenset[str] = frozenset({SimulatedTrade.event_type})


class StageError(ValueError):
    """A stage was handed something that does not fit the run as it stands."""


class SignalStage:
    """SE for one run: each candle to its symbol's strategy; an intent becomes a signal."""

    def __init__(
        self, run_id: str, strategy_id: str, strategy_factory: Callable[[], Strategy]
    ) -> None:
        self.run_id = run_id
        self.strategy_id = strategy_id
        self._strategy_factory = strategy_factory
        self._strategies: dict[str, Strategy] = {}
        self._ids = Sequencer(run_id)
        self.candles = 0

    @classmethod
    def from_metadata(cls, metadata: BacktestRunMetadata) -> SignalStage:
        config = BacktestConfig.model_validate(metadata.config)
        params = strategy_params(config.strategy_id, config.strategy_params)
        factory = strategy_factory(config.strategy_id, params)
        return cls(metadata.run_id, config.strategy_id, factory)

    def on_candle(self, candle: Bar) -> StrategySignal | None:
        """The run's next candle (number ``self.candles``); its signal, if any."""
        number = self.candles
        self.candles = number + 1
        strategy = self._strategies.get(candle.symbol)
        if strategy is None:
            strategy = self._strategies[candle.symbol] = self._strategy_factory()
        intent = strategy.on_candle(candle)
        if intent is None:
            return None
        candle_id = event_id_for(self.run_id, "market_data", number)
        return signal_event(self._ids, self.strategy_id, candle, candle_id, intent)


class ExecutionStage:
    """XS for one run: orders filled at the open of the candle they are due at."""

    def __init__(self, run_id: str, cost: CostModel, initial_cash: float) -> None:
        self.run_id = run_id
        self.cost = cost
        self.ledger = Portfolio(initial_cash)
        self._ids = Sequencer(run_id)
        self.results = 0

    @classmethod
    def from_metadata(cls, metadata: BacktestRunMetadata) -> ExecutionStage:
        config = BacktestConfig.model_validate(metadata.config)
        return cls(metadata.run_id, config.cost, config.initial_cash)

    def execute(self, order: SimulatedOrder, timestamp: int, open_price: float) -> SimulatedTrade:
        """``order`` at the open of the candle at ``timestamp``: filled or refused."""
        ledger = self.ledger
        result = execute_order(
            self._ids,
            order,
            timestamp,
            open_price,
            self.cost,
            ledger.cash,
            ledger.quantity(order.symbol),
        )
        self.fold(result)
        return result

    def expire(self, order: SimulatedOrder, end_timestamp: int) -> SimulatedTrade:
        """``order`` refused at the run's end: it has no next candle."""
        result = expire_order(self._ids, order, end_timestamp)
        self.fold(result)
        return result

    def fold(self, result: SimulatedTrade) -> None:
        """Take ``result`` (this stage's next, made here or read back from the log) into
        the ledger; a restarted stage folds what it wrote to stand where it stood."""
        if result.sequence != self.results:
            raise StageError(
                f"run {self.run_id}: order result {result.sequence} where {self.results} is next"
            )
        self.results += 1
        self._ids.resume({SimulatedTrade.event_type: self.results})
        if result.status == "FILLED":
            self.ledger.apply_fill(
                result.symbol, result.side, result.filled_quantity, result.price, result.fee
            )


class RiskStage(PaperTradingPipeline):
    """RE and PSM for one run: the pipeline, with SE's signals and XS's results handed in.

    ``on_staged_candle`` takes a candle with the signal SE gave on it (or None) and, when
    an order is due at it (``due_order``), XS's result for that order. The events it
    returns include the signal and the result it was handed, in the fused pipeline's
    order; the agent writes only its own types (not ``SIGNAL_TYPES`` or
    ``EXECUTION_TYPES``).
    """

    _signal_in: StrategySignal | None = None
    _result_in: SimulatedTrade | None = None

    def due_order(self, symbol: str) -> SimulatedOrder | None:
        """The order that fills at ``symbol``'s next candle, if one waits."""
        return self._pending.get(symbol)

    def on_staged_candle(
        self, candle: Bar, signal: StrategySignal | None, result: SimulatedTrade | None
    ) -> list[Event]:
        due = self._pending.get(candle.symbol)
        if (due is None) != (result is None):
            raise StageError(
                f"run {self.run_id}: candle {self.candles} "
                + ("has an order due and no result" if result is None else "has no order due")
            )
        if due is not None and result is not None and result.causation_id != due.event_id:
            raise StageError(
                f"run {self.run_id}: the result {result.event_id} is not of the due order "
                f"{due.event_id}"
            )
        if signal is not None:
            expected = event_id_for(self.run_id, "market_data", self.candles)
            if signal.causation_id != expected or signal.symbol != candle.symbol:
                raise StageError(
                    f"run {self.run_id}: the signal {signal.event_id} is not of candle "
                    f"{self.candles}"
                )
        self._signal_in, self._result_in = signal, result
        try:
            return self.on_candle(candle)
        finally:
            self._signal_in = self._result_in = None

    def _signal_for(self, candle: Bar, number: int) -> StrategySignal | None:
        return self._signal_in

    def _execute(self, order: SimulatedOrder, candle: Bar) -> SimulatedTrade:
        result = self._result_in
        assert result is not None  # checked in on_staged_candle
        return result
