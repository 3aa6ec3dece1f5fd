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

Nothing here reads a clock, a random generator or message timing, so the same candles
always give the same events, with the same derived ids.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from typing import Any

from domain.events import (
    Alert,
    BacktestRunMetadata,
    Bar,
    Event,
    PortfolioSnapshot,
    PositionState,
    RiskDecision,
    RiskState,
    RunCompleted,
    Sequencer,
    SimulatedOrder,
    SimulatedTrade,
    StrategySignal,
    event_id_for,
    interval_ms,
)
from domain.events.alerts import AlertLevel
from domain.events.risk import TradingState
from domain.execution import CostModel, fill_at_next_open, order_id_for
from domain.intensity import REASON_START, REASON_TRADES_WINDOW, IntensityTracker
from domain.portfolio import Portfolio
from domain.risk import (
    Notice,
    OrderProposal,
    RiskContext,
    RiskEngine,
    RiskMemory,
    reasons,
    side_for,
)
from domain.risk.config import with_intensity
from domain.run_config import BacktestConfig
from domain.statistics import PerformanceTracker
from domain.strategies import Strategy, strategy_factory, strategy_params

DAY_MS = 86_400_000


class _Pending:
    __slots__ = ("event_id", "order")

    def __init__(self, order: SimulatedOrder, event_id: str) -> None:
        self.order = order
        self.event_id = event_id


class PaperTradingPipeline:
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
        self.risk = risk_engine
        # The adaptive intensity, if on: its parameters replace their static values in the
        # Risk Engine's configuration, changing only with a closed trade (and an event).
        self.intensity: IntensityTracker | None = None
        self._base_risk = risk_engine.config
        self.cost = cost
        self.portfolio = Portfolio(initial_cash)
        self.tracker = PerformanceTracker(initial_cash, interval_ms)
        self.trading_state: TradingState = "ACTIVE"
        self.risk_memory = RiskMemory()
        intensity = risk_engine.config.intensity
        if intensity is not None and intensity.enabled:
            self.intensity = IntensityTracker(intensity)
            self.risk = RiskEngine(with_intensity(self._base_risk, self.intensity.parameters))
        self._settle_watch()
        self._pending: dict[str, _Pending] = {}
        self._ids = Sequencer(run_id)
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

    # -- state ------------------------------------------------------------------------------

    # Everything a candle can change; the rest (strategy factory, risk engine, costs) comes
    # from the run's configuration.
    _STATE = (
        "_strategies",
        "portfolio",
        "tracker",
        "trading_state",
        "risk_memory",
        "intensity",
        "_pending",
        "_ids",
        "_bar_ts",
        "_equity",
        "_in_market",
        "_day",
        "_orders_placed",
        "candles",
        "signals",
        "fills",
        "rejected",
        "last_timestamp",
        "last_interval_ms",
    )

    def export_state(self) -> bytes:
        """The pipeline's state between two candles, as bytes (a snapshot's payload)."""
        return pickle.dumps(
            {name: getattr(self, name) for name in self._STATE}, protocol=pickle.HIGHEST_PROTOCOL
        )

    # State added after snapshots were first written, with its value at a run's start. A
    # snapshot of the same package version from before holds none of it, and rightly so:
    # that code never put anything there.
    # State added after snapshots were first written: what an older snapshot lacks.
    _STATE_ADDED: dict[str, Callable[[PaperTradingPipeline], Any]] = {
        "risk_memory": lambda _pipeline: RiskMemory(),
        "intensity": lambda pipeline: pipeline.intensity,
    }

    def restore_state(self, payload: bytes) -> None:
        """Take the state ``export_state`` gave (of a pipeline of the same configuration)."""
        state = pickle.loads(payload)
        missing = set(self._STATE) - set(state)
        if set(state) - set(self._STATE) or not missing <= set(self._STATE_ADDED):
            raise ValueError("not the state of this pipeline")
        for name in missing:
            state[name] = self._STATE_ADDED[name](self)
        for name, value in state.items():
            setattr(self, name, value)
        if self.intensity is not None:
            self.risk = RiskEngine(with_intensity(self._base_risk, self.intensity.parameters))
        self._settle_watch()

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
        self.risk = risk_engine
        self._base_risk = risk_engine.config
        intensity = risk_engine.config.intensity
        if intensity is None or not intensity.enabled:
            self.intensity = None
        else:
            if self.intensity is None or self.intensity.config != intensity:
                self.intensity = IntensityTracker(intensity)  # other rules: a window of their own
            self.risk = RiskEngine(with_intensity(self._base_risk, self.intensity.parameters))
        self._settle_watch()

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
    def from_metadata(cls, metadata: BacktestRunMetadata) -> PaperTradingPipeline:
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
            self._risk_state(metadata.timestamp, metadata.event_id, reasons.OK),
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
            notices = self.risk.monitor.on_new_day(
                self.risk_memory, self._equity, self.trading_state
            )
            if notices:
                self._apply(notices, ts, self.market_data_id(number), out)
            self._settle_watch()  # a new day, a new high-water mark of the day
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
            # The hot path: most marks cross no level (see _settle_watch), and without level
            # rules one comparison says so.
            if drawdown >= self._watch_from or (
                self._watch_levels
                and not (
                    self._calm_from <= drawdown
                    and self._calm_gap_from <= self._day_high - equity < self._calm_gap_to
                )
            ):
                self._watch_drawdown(equity, drawdown, ts, number, out)
            self._in_market = True
        else:
            # Flat: equity is cash, which only a fill changes (and _fill refreshes the mark).
            self._equity = portfolio.cash
            self._in_market = False
        if new_day:
            if self._day is not None:
                out.append(self._snapshot(ts, self.market_data_id(number)))
            self._day = day
        strategy = self._strategies.get(symbol)
        if strategy is None:
            strategy = self._strategies[symbol] = self._strategy_factory()
        intent = strategy.on_candle(candle)
        if intent is not None:
            self._decide(candle, intent.direction, intent.reason, intent.strength, number, out)
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
            pending = self._pending[symbol]
            out.append(
                self._order_result(
                    pending, end_ts, "REJECTED", 0.0, 0.0, 0.0, reasons.NO_NEXT_CANDLE
                )
            )
            self.rejected += 1
        self._pending.clear()
        if dead_letters:
            out.append(
                self._alert(
                    end_ts,
                    "WARNING",
                    reasons.DATA_REJECTED,
                    f"{dead_letters} input row(s) could not be used; "
                    "they are in the dead_letters topic with their reasons.",
                )
            )
        seq, eid = self.next_id("run_completed")
        snapshot = self._snapshot(end_ts, eid)
        out.append(snapshot)
        out.append(
            RunCompleted(
                event_id=eid,
                run_id=self.run_id,
                sequence=seq,
                timestamp=end_ts,
                candles=self.candles,
                signals=self.signals,
                orders=self._orders_placed,
                fills=self.fills,
                rejected=self.rejected,
                dead_letters=dead_letters,
                statistics=self.tracker.result(self.portfolio.equity),
            )
        )
        return out

    # -- stages -------------------------------------------------------------------------------

    def _decide(
        self,
        candle: Bar,
        direction: Any,
        reason: str,
        strength: float | None,
        number: int,
        out: list[Event],
    ) -> None:
        decided_at = candle.timestamp + candle.interval_ms  # the bar's close
        seq, signal_id = self.next_id("signal")
        out.append(
            StrategySignal(
                event_id=signal_id,
                run_id=self.run_id,
                sequence=seq,
                causation_id=self.market_data_id(number),
                timestamp=decided_at,
                symbol=candle.symbol,
                direction=direction,
                strength=strength,
                reason=reason,
                strategy_id=self.strategy_id,
                price=candle.close,
            )
        )
        self.signals += 1
        side = side_for(direction)
        proposal = OrderProposal(candle.symbol, side, candle.close)  # type: ignore[arg-type]
        verdict = self.risk.decide(proposal, self._risk_context(decided_at))
        seq, decision_id = self.next_id("risk_decision")
        out.append(
            RiskDecision(
                event_id=decision_id,
                run_id=self.run_id,
                sequence=seq,
                causation_id=signal_id,
                timestamp=decided_at,
                symbol=candle.symbol,
                requested_direction=direction,
                approved=verdict.approved,
                approved_size=verdict.quantity,
                reason_code=verdict.reason_code,
                requested_size=verdict.requested_quantity,
            )
        )
        if not verdict.approved:
            self.rejected += 1
            return
        self._orders_placed += 1
        if self.risk.limits_order_rate:
            self.risk.monitor.record_order(self.risk_memory, decided_at)
        seq, order_event_id = self.next_id("order")
        order = SimulatedOrder(
            event_id=order_event_id,
            run_id=self.run_id,
            sequence=seq,
            causation_id=decision_id,
            timestamp=decided_at,
            order_id=order_id_for(self.run_id, self._orders_placed),
            symbol=candle.symbol,
            side=side,
            quantity=verdict.quantity,
        )
        out.append(order)
        self._pending[candle.symbol] = _Pending(order, order_event_id)

    def _risk_context(self, decided_at: int) -> RiskContext:
        portfolio = self.portfolio
        exposure = {symbol: portfolio.exposure(symbol) for symbol in portfolio.positions}
        entries = []
        for symbol, pending in self._pending.items():
            if pending.order.side == "BUY":
                entries.append(symbol)
                reserved = pending.order.quantity * portfolio.marks.get(symbol, 0.0)
                exposure[symbol] = exposure.get(symbol, 0.0) + reserved
        return RiskContext(
            equity=portfolio.equity,
            cash=portfolio.cash,
            positions={s: p.quantity for s, p in portfolio.positions.items()},
            exposure_by_symbol=exposure,
            total_exposure=sum(exposure.values()),
            trading_state=self.trading_state,
            config=self.risk.config,
            timestamp=decided_at,
            pending_entries=frozenset(entries),
            memory=self.risk_memory,
        )

    def _fill(self, pending: _Pending, candle: Bar, out: list[Event]) -> None:
        order = pending.order
        portfolio = self.portfolio
        held = portfolio.quantity(order.symbol)
        fill = fill_at_next_open(
            order.side, order.quantity, candle.open, self.cost, portfolio.cash, held
        )
        result = self._order_result(
            pending,
            candle.timestamp,
            fill.status,
            fill.quantity,
            fill.price,
            fill.fee,
            fill.reason,
        )
        out.append(result)
        if fill.status != "FILLED":
            self.rejected += 1
            return
        self.fills += 1
        reduces = held != 0.0 and (held > 0.0) != (order.side == "BUY")
        risk = self.risk
        watch_exit = reduces and risk.watches_exits
        entry_price = (
            portfolio.positions[order.symbol].avg_entry_price
            if watch_exit or (reduces and self.intensity is not None)
            else 0.0
        )
        pnl = portfolio.apply_fill(order.symbol, order.side, fill.quantity, fill.price, fill.fee)
        if reduces:
            self.tracker.on_closed_trade(pnl)
        position = portfolio.positions[order.symbol]
        seq, eid = self.next_id("position_state")
        out.append(
            PositionState(
                event_id=eid,
                run_id=self.run_id,
                sequence=seq,
                causation_id=result.event_id,
                timestamp=candle.timestamp,
                symbol=order.symbol,
                quantity=position.quantity,
                avg_entry_price=position.avg_entry_price,
                realized_pnl=position.realized_pnl,
                last_price=fill.price,
                order_id=order.order_id,
                trade_realized_pnl=pnl,
            )
        )
        drawdown = portfolio.update_high_water_mark()
        self._equity = portfolio.equity
        out.append(self._snapshot(candle.timestamp, result.event_id))
        if watch_exit:
            notices = risk.monitor.on_exit(
                self.risk_memory,
                order.symbol,
                candle.timestamp,
                pnl,
                entry_price,
                fill.price,
                self.trading_state,
            )
            self._apply(notices, candle.timestamp, result.event_id, out)
        # A fill can realise a loss that no later mark shows (flat again): the daily
        # drawdown, which resets at midnight, would miss it.
        if self._watch_levels and not self._calm(self._equity, drawdown):
            notices = risk.monitor.watch_levels(self.risk_memory, self._equity, drawdown)
            if notices:
                self._apply(notices, candle.timestamp, result.event_id, out)
            self._settle_watch()
        if reduces and self.intensity is not None:
            invested = entry_price * fill.quantity
            changed = self.intensity.on_closed_trade(
                pnl, pnl / invested * 100.0 if invested > 0.0 else 0.0
            )
            if changed is not None:
                out.append(
                    self._intensity_changed(candle.timestamp, result.event_id, REASON_TRADES_WINDOW)
                )
                # From the next decision on; the Risk Engine reads it in the order of the log.
                self.risk = RiskEngine(with_intensity(self._base_risk, changed))
                self._settle_watch()

    def _order_result(
        self,
        pending: _Pending,
        timestamp: int,
        status: Any,
        quantity: float,
        price: float,
        fee: float,
        reason: str | None,
    ) -> SimulatedTrade:
        order = pending.order
        seq, eid = self.next_id("order_result")
        return SimulatedTrade(
            event_id=eid,
            run_id=self.run_id,
            sequence=seq,
            causation_id=pending.event_id,
            timestamp=timestamp,
            order_id=order.order_id,
            status=status,
            symbol=order.symbol,
            side=order.side,
            filled_quantity=quantity,
            price=price,
            fee=fee,
            reason=reason,
        )

    def _settle_watch(self) -> None:
        """Work out which marks and fills the drawdown watch must see: those at or beyond
        the halt limit, and with level rules those outside the band in which the monitor's
        ``watch_levels`` would do nothing (``RiskMonitor.calm``); the others it would not
        act on, so leaving them unseen changes no event. The band depends on the trading
        state, the configuration and what the memory says about the levels, so it is settled
        again whenever one of them changes; in between, each mark costs a few comparisons."""
        risk = self.risk
        self._watch_levels = False
        self._calm_from, self._day_high = -math.inf, 0.0
        self._calm_gap_from, self._calm_gap_to = -math.inf, math.inf
        if self.trading_state == "HALTED":
            # Halted for good: nothing is watched any more (as the state says).
            self._watch_from = math.inf
            return
        self._watch_from = risk.max_drawdown_pct
        if not risk.watches_levels:
            return
        calm = risk.monitor.calm(self.risk_memory)
        self._watch_levels = True
        self._watch_from = min(self._watch_from, calm.drawdown_high)
        self._calm_from = calm.drawdown_low
        self._day_high = calm.day_high_water_mark
        self._calm_gap_from = calm.gap_low
        self._calm_gap_to = calm.gap_high

    def _calm(self, equity: float, drawdown: float) -> bool:
        """Whether ``watch_levels`` would do nothing with this equity and drawdown."""
        return (
            self._calm_from <= drawdown < self._watch_from
            and self._calm_gap_from <= self._day_high - equity < self._calm_gap_to
        )

    def _watch_drawdown(
        self, equity: float, drawdown: float, ts: int, number: int, out: list[Event]
    ) -> None:
        risk = self.risk
        state = risk.trading_state_after(self.trading_state, drawdown)
        if state == self.trading_state:
            if risk.watches_levels:
                notices = risk.monitor.watch_levels(self.risk_memory, equity, drawdown)
                if notices:
                    self._apply(notices, ts, self.market_data_id(number), out)
                self._settle_watch()
            return
        self.trading_state = state
        self._settle_watch()
        limit = risk.config.max_drawdown_pct
        alert = self._alert(
            ts,
            "CRITICAL",
            reasons.DRAWDOWN_LIMIT_HIT,
            f"Maximum drawdown reached: {drawdown:.2f}% from the high-water mark "
            f"(limit {limit:g}%). New entries stopped.",
        )
        out.append(alert)
        out.append(self._risk_state(ts, alert.event_id, reasons.DRAWDOWN_LIMIT_HIT))
        self._trip_kill_switch(ts, alert, out)

    def _apply(self, notices: list[Notice], ts: int, cause: str, out: list[Event]) -> None:
        """Each notice is an alert; one that moves the trading state is followed by the
        RiskState it moved to; a CRITICAL one may trip the kill switch."""
        for notice in notices:
            alert = self._alert(ts, notice.level, notice.code, notice.message, cause)
            out.append(alert)
            if notice.moves_state:
                state = self.risk.monitor.trading_state(self.risk_memory, self.trading_state)
                if state != self.trading_state:
                    self.trading_state = state
                    self._settle_watch()
                    out.append(self._risk_state(ts, alert.event_id, notice.code))
            if notice.level == "CRITICAL":
                self._trip_kill_switch(ts, alert, out)

    def _trip_kill_switch(self, ts: int, cause: Alert, out: list[Event]) -> None:
        """With ``kill_switch_on_critical``, a CRITICAL alert stops all trading for good."""
        config = self.risk.config
        memory = self.risk_memory
        if not config.kill_switch_on_critical or config.kill_switch or memory.kill_switch_tripped:
            return
        memory.kill_switch_tripped = True
        alert = self._alert(
            ts,
            "CRITICAL",
            reasons.KILL_SWITCH_ENGAGED,
            f"Kill switch on after the CRITICAL alert {cause.code}: "
            "no order passes for the rest of the run.",
            cause.event_id,
        )
        out.append(alert)
        out.append(self._risk_state(ts, alert.event_id, reasons.KILL_SWITCH_ENGAGED))

    # -- state events -----------------------------------------------------------------------

    def _intensity_changed(self, ts: int, cause: str | None, reason: str) -> Event:
        assert self.intensity is not None
        seq, eid = self.next_id("intensity_changed")
        return self.intensity.changed_event(
            event_id=eid,
            run_id=self.run_id,
            sequence=seq,
            timestamp=ts,
            causation_id=cause,
            reason=reason,
        )

    def _alert(
        self, ts: int, level: AlertLevel, code: str, message: str, cause: str | None = None
    ) -> Alert:
        seq, eid = self.next_id("alert")
        return Alert(
            event_id=eid,
            run_id=self.run_id,
            sequence=seq,
            causation_id=cause,
            timestamp=ts,
            level=level,
            code=code,
            message=message,
        )

    def _risk_state(self, ts: int, cause: str | None, reason_code: str) -> RiskState:
        portfolio = self.portfolio
        equity = portfolio.equity
        seq, eid = self.next_id("risk_state")
        return RiskState(
            event_id=eid,
            run_id=self.run_id,
            sequence=seq,
            causation_id=cause,
            timestamp=ts,
            trading_state=self.trading_state,
            kill_switch=self.risk.config.kill_switch or self.risk_memory.kill_switch_tripped,
            drawdown_pct=portfolio.drawdown_pct,
            exposure_pct=portfolio.total_exposure / equity * 100.0 if equity > 0 else 0.0,
            reason_code=reason_code,
        )

    def _snapshot(self, ts: int, cause: str | None) -> PortfolioSnapshot:
        portfolio = self.portfolio
        equity = portfolio.equity
        exposure = portfolio.total_exposure
        seq, eid = self.next_id("portfolio_snapshot")
        return PortfolioSnapshot(
            event_id=eid,
            run_id=self.run_id,
            sequence=seq,
            causation_id=cause,
            timestamp=ts,
            cash=portfolio.cash,
            equity=equity,
            high_water_mark=portfolio.high_water_mark,
            drawdown_pct=portfolio.drawdown_pct,
            exposure=exposure,
            exposure_pct=exposure / equity * 100.0 if equity > 0 else 0.0,
            realized_pnl=portfolio.realized_pnl,
            open_positions=portfolio.open_positions,
        )
