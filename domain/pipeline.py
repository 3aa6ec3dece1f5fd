"""One portfolio's paper-trading pipeline: SE -> RE -> XS -> PSM, candle by candle.

The stages advance depth-first: each candle runs through every stage before the next
candle is looked at, exactly as a Kafka Streams sub-topology runs one record through all
its processors. The order of work for a candle of symbol S at time t is:

1. close the previous bar if t is a new timestamp (statistics sample its equity);
   on a new UTC day the RE lifts what held trading to exits until then;
2. XS fills S's pending order, if any, at this candle's open; PSM folds the fill; the RE
   notes an exit's P&L (cooldowns, losing streaks);
3. PSM marks S at the close; the RE's drawdown watch may halt or reduce new entries;
4. SE sees the candle and may signal; RE decides with the portfolio as of now;
   an approved order waits for S's next candle.

The drawdown watch, the kill switch and the trading state are the trading guard's
(``domain.risk.guard``); the run's sequencer fills every event's envelope.

Nothing here reads a clock, a random generator or message timing, so the same candles
always give the same events, with the same derived ids.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Self

from domain.events import (
    BacktestRunMetadata,
    Bar,
    Event,
    IntensityChanged,
    PortfolioSnapshot,
    PositionState,
    RiskDecision,
    RunCompleted,
    Sequencer,
    SimulatedOrder,
    SimulatedTrade,
    StrategySignal,
    event_id_for,
    interval_ms,
)
from domain.events.risk import TradingState
from domain.execution import CostModel, order_id_for
from domain.intensity import REASON_START, REASON_TRADES_WINDOW, IntensityTracker
from domain.pipeline_state import (
    EngineStateError,
    PipelineState,
    StrategyState,
    decode_state,
    encode_state,
)
from domain.portfolio import Portfolio
from domain.risk import OrderProposal, RiskContext, RiskEngine, RiskMemory, reasons, side_for
from domain.risk.config import with_intensity
from domain.risk.guard import TradingGuard
from domain.run_config import BacktestConfig
from domain.statistics import PerformanceTracker
from domain.steps import execute_order, expire_order, signal_event
from domain.strategies import Strategy, strategy_factory, strategy_params

DAY_MS = 86_400_000


class PaperTradingPipeline:
    # The watch over drawdown and trading state; a subclass may watch otherwise (tests).
    guard_type: type[TradingGuard] = TradingGuard

    def __init__(
        self,
        run_id: str,
        strategy_id: str,
        strategy_factory: Callable[[], Strategy],
        risk_engine: RiskEngine,
        cost: CostModel,
        initial_cash: float,
        interval_ms: int,
    ) -> None:
        self.run_id = run_id
        self.strategy_id = strategy_id
        self._strategy_factory = strategy_factory
        self._strategies: dict[str, Strategy] = {}
        self.cost = cost
        self.portfolio = Portfolio(initial_cash)
        self.tracker = PerformanceTracker(initial_cash, interval_ms)
        self._ids = Sequencer(run_id)
        self.risk = risk_engine
        self.guard = self.guard_type(risk_engine, self.portfolio, self._ids)
        # The adaptive intensity, if on: its parameters replace their static values in the
        # Risk Engine's configuration, changing only with a closed trade (and an event).
        self.intensity: IntensityTracker | None = None
        self._base_risk = risk_engine.config
        intensity = risk_engine.config.intensity
        if intensity is not None and intensity.enabled:
            self.intensity = IntensityTracker(intensity)
            self._use_intensity()
        self._pending: dict[str, SimulatedOrder] = {}  # by symbol, waiting for its next candle
        self._bar_ts: int | None = None
        self._equity = initial_cash  # equity after the latest candle: the bar's close
        self._in_market = False
        self._day: int | None = None
        self._orders_placed = 0
        self.candles = 0
        self.signals = 0
        self.fills = 0
        self.rejected = 0
        self.last_timestamp = 0
        self.last_interval_ms = interval_ms

    @property
    def trading_state(self) -> TradingState:
        return self.guard.trading_state

    @property
    def risk_memory(self) -> RiskMemory:
        return self.guard.memory

    def _use_risk(self, engine: RiskEngine) -> None:
        """Decide with ``engine`` from the next decision on; the guard watches with it."""
        self.risk = engine
        self.guard.settle(engine)

    def _use_intensity(self) -> None:
        assert self.intensity is not None
        self._use_risk(RiskEngine(with_intensity(self._base_risk, self.intensity.parameters)))

    # -- state ------------------------------------------------------------------------------

    def state(self) -> PipelineState:
        """Everything a candle can change, as a value (see ``domain.pipeline_state``); the
        rest (strategy factory, Risk Engine, costs) comes from the run's configuration."""
        return PipelineState(
            strategy_id=self.strategy_id,
            strategies={
                symbol: StrategyState(strategy_id=strategy.strategy_id, state=strategy.state())
                for symbol, strategy in self._strategies.items()
            },
            pending_orders=list(self._pending.values()),
            portfolio=self.portfolio.state(),
            statistics=self.tracker.state(),
            trading_state=self.guard.trading_state,
            risk_memory=copy.deepcopy(self.guard.memory),
            intensity=None if self.intensity is None else self.intensity.state(),
            sequences=self._ids.positions(),
            bar_timestamp=self._bar_ts,
            equity=self._equity,
            in_market=self._in_market,
            day=self._day,
            orders_placed=self._orders_placed,
            candles=self.candles,
            signals=self.signals,
            fills=self.fills,
            rejected=self.rejected,
            last_timestamp=self.last_timestamp,
            last_interval_ms=self.last_interval_ms,
        )

    def restore(self, state: PipelineState) -> None:
        """Take ``state`` (what ``state()`` gave, of a pipeline of the same configuration):
        the next candle goes on as it would have in that pipeline. EngineStateError, and
        this pipeline unchanged, if it is not a state this pipeline can take."""
        if state.strategy_id != self.strategy_id:
            raise EngineStateError(
                f"not the state of this pipeline: strategy {state.strategy_id!r}, "
                f"this pipeline runs {self.strategy_id!r}"
            )
        if (state.intensity is None) != (self.intensity is None):
            raise EngineStateError(
                "not the state of this pipeline: the adaptive intensity is "
                f"{'off' if state.intensity is None else 'on'} in it, and not here"
            )
        try:
            strategies = {
                symbol: self._strategy_from(held) for symbol, held in state.strategies.items()
            }
            portfolio = Portfolio(self.portfolio.initial_cash)
            portfolio.restore(state.portfolio)
            intensity = None
            if self.intensity is not None and state.intensity is not None:
                intensity = IntensityTracker(self.intensity.config)
                intensity.restore(state.intensity)
        except ValueError as exc:
            raise EngineStateError(f"not the state of this pipeline: {exc}") from None
        self._strategies = strategies
        self.portfolio = portfolio
        self._pending = {order.symbol: order for order in state.pending_orders}
        self.tracker.restore(state.statistics)
        self._ids.resume(state.sequences)
        self.guard = self.guard_type(self.risk, portfolio, self._ids)
        self.guard.trading_state = state.trading_state
        self.guard.memory = copy.deepcopy(state.risk_memory)
        self.intensity = intensity
        if intensity is not None:
            self._use_intensity()
        self.guard.settle()
        self._bar_ts = state.bar_timestamp
        self._equity = state.equity
        self._in_market = state.in_market
        self._day = state.day
        self._orders_placed = state.orders_placed
        self.candles = state.candles
        self.signals = state.signals
        self.fills = state.fills
        self.rejected = state.rejected
        self.last_timestamp = state.last_timestamp
        self.last_interval_ms = state.last_interval_ms

    def _strategy_from(self, held: StrategyState) -> Strategy:
        strategy = self._strategy_factory()
        if held.strategy_id != strategy.strategy_id:
            raise ValueError(
                f"a {held.strategy_id} strategy's state, this pipeline makes {strategy.strategy_id}"
            )
        strategy.restore(held.state)
        return strategy

    def export_state(self) -> bytes:
        """The pipeline's state between two candles, as bytes (a snapshot's payload): JSON
        of ``state()``, with its ``state_version``."""
        return encode_state(self.state())

    def restore_state(self, payload: bytes) -> None:
        """Take the state ``export_state`` gave (of a pipeline of the same configuration);
        EngineStateError (a ValueError) says why a payload is refused."""
        self.restore(decode_state(payload))

    def sequence_positions(self) -> dict[str, int]:
        """The next sequence of each event type this pipeline would write."""
        return self._ids.positions()

    @property
    def has_pending_orders(self) -> bool:
        return bool(self._pending)

    def switch_to(self, strategy_factory: Callable[[], Strategy], risk_engine: RiskEngine) -> None:
        """Go on with other strategies (fresh ones per symbol) and another Risk Engine: a
        replay of recorded signals under other rules. What the Risk Engine remembers (the
        trading state, cooldowns, streaks) carries over: it is the run's history."""
        self._strategy_factory = strategy_factory
        self._strategies = {}
        self._base_risk = risk_engine.config
        intensity = risk_engine.config.intensity
        if intensity is None or not intensity.enabled:
            self.intensity = None
            self._use_risk(risk_engine)
            return
        if self.intensity is None or self.intensity.config != intensity:
            self.intensity = IntensityTracker(intensity)  # other rules: a window of their own
        self._use_intensity()

    def continue_as(self, run_id: str) -> None:
        """From here on the events belong to ``run_id`` (a replay's own run); their
        sequences continue where this run's stand."""
        self.run_id = run_id
        self._ids.run_id = run_id

    # -- identity -------------------------------------------------------------------------

    def next_id(self, event_type: str) -> tuple[int, str]:
        """Allocate the next sequence number and derived event id of ``event_type``."""
        return self._ids.next_id(event_type)

    def market_data_id(self, sequence: int) -> str:
        return event_id_for(self.run_id, "market_data", sequence)

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    def from_metadata(cls, metadata: BacktestRunMetadata) -> Self:
        """The pipeline a run's metadata describes: the log alone is enough to rebuild it."""
        config = BacktestConfig.model_validate(metadata.config)
        params = strategy_params(config.strategy_id, config.strategy_params)
        return cls(
            run_id=metadata.run_id,
            strategy_id=config.strategy_id,
            strategy_factory=strategy_factory(config.strategy_id, params),
            risk_engine=RiskEngine(config.risk),
            cost=config.cost,
            initial_cash=config.initial_cash,
            interval_ms=min(interval_ms(s.interval) for s in metadata.data_sources)
            if metadata.data_sources
            else 60_000,
        )

    def begin(self, metadata: BacktestRunMetadata) -> list[Event]:
        """The run's opening state: trading ACTIVE, the equity curve at the initial cash,
        and the adaptive intensity's starting parameters if it is on."""
        out: list[Event] = [
            self.guard.state_event(metadata.timestamp, metadata.event_id, reasons.OK),
            self._snapshot(metadata.timestamp, metadata.event_id),
        ]
        if self.intensity is not None:
            out.append(self._intensity_changed(metadata.timestamp, metadata.event_id, REASON_START))
        return out

    def on_candle(self, candle: Bar) -> list[Event]:
        """Run one candle through every stage; return the events it caused, in order.

        The candle's own ``market_data`` event has sequence ``self.candles`` before the call.
        """
        number = self.candles
        self.candles = number + 1
        out: list[Event] = []
        ts = candle.timestamp
        if ts != self._bar_ts:
            if self._bar_ts is not None:
                self.tracker.on_bar(self._bar_ts, self._equity, self._in_market)
            self._bar_ts = ts
        day = ts // DAY_MS
        new_day = day != self._day
        if new_day and self.risk.watches_day:
            self.guard.on_new_day(self._equity, ts, number, out)
        symbol = candle.symbol
        portfolio = self.portfolio
        if self._pending:
            pending = self._pending.pop(symbol, None)
            if pending is not None:
                self._fill(pending, candle, out)
        portfolio.marks[symbol] = candle.close
        if portfolio.open_count:
            equity = self._equity = portfolio.equity
            drawdown = portfolio.update_high_water_mark(equity)
            # The hot path: most marks cross no level (see TradingGuard.settle), and without
            # level rules one comparison says so. Spelt out here rather than called: it runs
            # on every candle in the market.
            guard = self.guard
            if drawdown >= guard.watch_from or (
                guard.watch_levels
                and not (
                    guard.calm_from <= drawdown
                    and guard.calm_gap_from <= guard.day_high - equity < guard.calm_gap_to
                )
            ):
                guard.watch_mark(equity, drawdown, ts, number, out)
            self._in_market = True
        else:
            # Flat: equity is cash, which only a fill changes (and _fill refreshes the mark).
            self._equity = portfolio.cash
            self._in_market = False
        if new_day:
            if self._day is not None:
                out.append(self._snapshot(ts, self.market_data_id(number)))
            self._day = day
        signal = self._signal_for(candle, number)
        if signal is not None:
            out.append(signal)
            self._decide(candle, signal, out)
        self.last_timestamp = ts
        self.last_interval_ms = candle.interval_ms
        return out

    def finish(self, dead_letters: int) -> list[Event]:
        """End the run: orders with no next candle are rejected, then the final results."""
        out: list[Event] = []
        end_ts = self.last_timestamp + self.last_interval_ms if self.candles else 0
        if self._bar_ts is not None:
            self.tracker.on_bar(self._bar_ts, self._equity, self._in_market)
            self._bar_ts = None
        for symbol in sorted(self._pending):
            order = self._pending[symbol]
            out.append(expire_order(self._ids, order, end_ts))
            self.rejected += 1
        self._pending.clear()
        if dead_letters:
            out.append(
                self.guard.alert(
                    end_ts,
                    "WARNING",
                    reasons.DATA_REJECTED,
                    f"{dead_letters} input row(s) could not be used; "
                    "they are in the dead_letters topic with their reasons.",
                )
            )
        completed = self._ids.new_event(
            RunCompleted,
            end_ts,
            None,
            candles=self.candles,
            signals=self.signals,
            orders=self._orders_placed,
            fills=self.fills,
            rejected=self.rejected,
            dead_letters=dead_letters,
            statistics=self.tracker.result(self.portfolio.equity),
        )
        # The final equity curve point, caused by the end it records, comes first.
        out.append(self._snapshot(end_ts, completed.event_id))
        out.append(completed)
        return out

    # -- stages -------------------------------------------------------------------------------

    def _signal_for(self, candle: Bar, number: int) -> StrategySignal | None:
        """SE: the signal the symbol's strategy gives on ``candle`` (the run's candle
        ``number``), if any."""
        strategy = self._strategies.get(candle.symbol)
        if strategy is None:
            strategy = self._strategies[candle.symbol] = self._strategy_factory()
        intent = strategy.on_candle(candle)
        if intent is None:
            return None
        return signal_event(
            self._ids, self.strategy_id, candle, self.market_data_id(number), intent
        )

    def _decide(self, candle: Bar, signal: StrategySignal, out: list[Event]) -> None:
        """RE: approve, size or reject ``signal`` with the portfolio as of now; an
        approved order waits for its symbol's next candle."""
        decided_at = signal.timestamp
        new_event = self._ids.new_event
        symbol = candle.symbol
        direction = signal.direction
        self.signals += 1
        side = side_for(direction)
        proposal = OrderProposal(symbol, side, candle.close)  # type: ignore[arg-type]
        verdict = self.risk.decide(proposal, self._risk_context(decided_at))
        decision = new_event(
            RiskDecision,
            decided_at,
            signal.event_id,
            symbol=symbol,
            requested_direction=direction,
            approved=verdict.approved,
            approved_size=verdict.quantity,
            reason_code=verdict.reason_code,
            requested_size=verdict.requested_quantity,
        )
        out.append(decision)
        if not verdict.approved:
            self.rejected += 1
            return
        self._orders_placed += 1
        if self.risk.limits_order_rate:
            self.risk.monitor.record_order(self.guard.memory, decided_at)
        order = new_event(
            SimulatedOrder,
            decided_at,
            decision.event_id,
            order_id=order_id_for(self.run_id, self._orders_placed),
            symbol=symbol,
            side=side,
            quantity=verdict.quantity,
        )
        out.append(order)
        self._pending[symbol] = order

    def _risk_context(self, decided_at: int) -> RiskContext:
        portfolio = self.portfolio
        exposure = {symbol: portfolio.exposure(symbol) for symbol in portfolio.positions}
        entries = []
        for symbol, order in self._pending.items():
            if order.side == "BUY":
                entries.append(symbol)
                reserved = order.quantity * portfolio.marks.get(symbol, 0.0)
                exposure[symbol] = exposure.get(symbol, 0.0) + reserved
        guard = self.guard
        return RiskContext(
            equity=portfolio.equity,
            cash=portfolio.cash,
            positions={s: p.quantity for s, p in portfolio.positions.items()},
            exposure_by_symbol=exposure,
            total_exposure=sum(exposure.values()),
            trading_state=guard.trading_state,
            config=self.risk.config,
            timestamp=decided_at,
            pending_entries=frozenset(entries),
            memory=guard.memory,
        )

    def _fill(self, order: SimulatedOrder, candle: Bar, out: list[Event]) -> None:
        """XS fills ``order`` at ``candle``'s open; PSM and the RE take the result."""
        result = self._execute(order, candle)
        out.append(result)
        self._settle(order, result, candle, out)

    def _execute(self, order: SimulatedOrder, candle: Bar) -> SimulatedTrade:
        """XS: ``order``'s result at ``candle``'s open, with the portfolio's cash and holdings."""
        portfolio = self.portfolio
        return execute_order(
            self._ids,
            order,
            candle.timestamp,
            candle.open,
            self.cost,
            portfolio.cash,
            portfolio.quantity(order.symbol),
        )

    def _settle(
        self, order: SimulatedOrder, result: SimulatedTrade, candle: Bar, out: list[Event]
    ) -> None:
        """PSM folds ``order``'s result; the RE notes an exit, its drawdown and intensity."""
        if result.status != "FILLED":
            self.rejected += 1
            return
        portfolio = self.portfolio
        held = portfolio.quantity(order.symbol)
        self.fills += 1
        reduces = held != 0.0 and (held > 0.0) != (order.side == "BUY")
        watch_exit = reduces and self.risk.watches_exits
        entry_price = (
            portfolio.positions[order.symbol].avg_entry_price
            if watch_exit or (reduces and self.intensity is not None)
            else 0.0
        )
        pnl = portfolio.apply_fill(
            order.symbol, order.side, result.filled_quantity, result.price, result.fee
        )
        if reduces:
            self.tracker.on_closed_trade(pnl)
        position = portfolio.positions[order.symbol]
        out.append(
            self._ids.new_event(
                PositionState,
                candle.timestamp,
                result.event_id,
                symbol=order.symbol,
                quantity=position.quantity,
                avg_entry_price=position.avg_entry_price,
                realized_pnl=position.realized_pnl,
                last_price=result.price,
                order_id=order.order_id,
                trade_realized_pnl=pnl,
            )
        )
        drawdown = portfolio.update_high_water_mark()
        equity = self._equity = portfolio.equity
        out.append(self._snapshot(candle.timestamp, result.event_id))
        guard = self.guard
        if watch_exit:
            guard.on_exit(
                order.symbol, candle.timestamp, pnl, entry_price, result.price, result.event_id, out
            )
        guard.after_fill(equity, drawdown, candle.timestamp, result.event_id, out)
        if reduces and self.intensity is not None:
            invested = entry_price * result.filled_quantity
            changed = self.intensity.on_closed_trade(
                pnl, pnl / invested * 100.0 if invested > 0.0 else 0.0
            )
            if changed is not None:
                out.append(
                    self._intensity_changed(candle.timestamp, result.event_id, REASON_TRADES_WINDOW)
                )
                # From the next decision on; the Risk Engine reads it in the order of the log.
                self._use_intensity()

    # -- state events -----------------------------------------------------------------------

    def _intensity_changed(self, ts: int, cause: str | None, reason: str) -> IntensityChanged:
        assert self.intensity is not None
        return self._ids.new_event(
            IntensityChanged, ts, cause, **self.intensity.changed_fields(reason)
        )

    def _snapshot(self, ts: int, cause: str | None) -> PortfolioSnapshot:
        portfolio = self.portfolio
        equity = portfolio.equity
        exposure = portfolio.total_exposure
        return self._ids.new_event(
            PortfolioSnapshot,
            ts,
            cause,
            cash=portfolio.cash,
            equity=equity,
            high_water_mark=portfolio.high_water_mark,
            drawdown_pct=portfolio.drawdown_pct,
            exposure=exposure,
            exposure_pct=exposure / equity * 100.0 if equity > 0 else 0.0,
            realized_pnl=portfolio.realized_pnl,
            open_positions=portfolio.open_positions,
        )
