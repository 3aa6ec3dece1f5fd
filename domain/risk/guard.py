"""The trading guard: the Risk Engine's watch over one running portfolio.

It holds the trading state (ACTIVE, REDUCING, HALTED) and the memory the rules decide
with, and turns what happens between signals into them, and into events:

1. a mark at or beyond the drawdown limit halts trading for good (CRITICAL
   ``DRAWDOWN_LIMIT_HIT``, then the ``RiskState`` it moved to);
2. with drawdown levels configured, marks and fills go to the monitor's ``watch_levels``,
   new UTC days to ``on_new_day``, exits to ``on_exit``: each notice becomes an ``Alert``,
   one that moves the trading state is followed by the ``RiskState`` it moved to;
3. with ``kill_switch_on_critical``, a CRITICAL alert trips the kill switch, once.

Events come out in that order, with the run's sequencer filling their envelopes, so a run
and its replay give the same ones.

The calm band (``settle``): most marks cross no level. The guard works out, whenever the
trading state, the configuration or the memory of the levels changes, the drawdowns and
equities the monitor would do nothing with; the pipeline's per-candle hot path compares a
mark with those few bounds (``watch_from``, ``watch_levels``, ``calm_from``,
``day_high``, ``calm_gap_from``, ``calm_gap_to``) and calls ``watch_mark`` only outside
them. Leaving the others unseen changes no event.
"""

from __future__ import annotations

import math

from domain.events import Alert, Event, RiskState, Sequencer, event_id_for
from domain.events.alerts import AlertLevel
from domain.events.risk import TradingState
from domain.portfolio import Portfolio
from domain.risk import reasons
from domain.risk.engine import RiskEngine
from domain.risk.memory import Notice, RiskMemory


class TradingGuard:
    __slots__ = (
        "_ids",
        "_portfolio",
        "calm_from",
        "calm_gap_from",
        "calm_gap_to",
        "day_high",
        "memory",
        "risk",
        "trading_state",
        "watch_from",
        "watch_levels",
    )

    def __init__(self, risk: RiskEngine, portfolio: Portfolio, ids: Sequencer) -> None:
        self._portfolio = portfolio
        self._ids = ids
        self.trading_state: TradingState = "ACTIVE"
        self.memory = RiskMemory()
        self.settle(risk)

    # -- the calm band ----------------------------------------------------------------------

    def settle(self, risk: RiskEngine | None = None) -> None:
        """Work out which marks and fills the drawdown watch must see (with ``risk``, the
        Risk Engine in force from now on): those at or beyond the halt limit, and with
        level rules those outside the band in which the monitor's ``watch_levels`` would do
        nothing (``RiskMonitor.calm``). The band depends on the trading state, the
        configuration and what the memory says about the levels, so it is settled again
        whenever one of them changes; in between, each mark costs a few comparisons."""
        if risk is not None:
            self.risk = risk
        risk = self.risk
        self.watch_levels = False
        self.calm_from, self.day_high = -math.inf, 0.0
        self.calm_gap_from, self.calm_gap_to = -math.inf, math.inf
        if self.trading_state == "HALTED":
            # Halted for good: nothing is watched any more (as the state says).
            self.watch_from = math.inf
            return
        self.watch_from = risk.max_drawdown_pct
        if not risk.watches_levels:
            return
        calm = risk.monitor.calm(self.memory)
        self.watch_levels = True
        self.watch_from = min(self.watch_from, calm.drawdown_high)
        self.calm_from = calm.drawdown_low
        self.day_high = calm.day_high_water_mark
        self.calm_gap_from = calm.gap_low
        self.calm_gap_to = calm.gap_high

    def calm(self, equity: float, drawdown: float) -> bool:
        """Whether ``watch_levels`` would do nothing with this equity and drawdown."""
        return (
            self.calm_from <= drawdown < self.watch_from
            and self.calm_gap_from <= self.day_high - equity < self.calm_gap_to
        )

    # -- what the pipeline tells it ---------------------------------------------------------

    def on_new_day(self, equity: float, ts: int, candle: int, out: list[Event]) -> None:
        """A new UTC day begins with candle number ``candle`` (its market_data event causes
        what this raises): lift what held trading to exits until then."""
        notices = self.risk.monitor.on_new_day(self.memory, equity, self.trading_state)
        if notices:
            self.apply(notices, ts, self._candle_id(candle), out)
        self.settle()  # a new day, a new high-water mark of the day

    def watch_mark(
        self, equity: float, drawdown: float, ts: int, candle: int, out: list[Event]
    ) -> None:
        """A mark the calm band let through: halt at the limit, else watch the levels."""
        risk = self.risk
        state = risk.trading_state_after(self.trading_state, drawdown)
        if state == self.trading_state:
            if risk.watches_levels:
                notices = risk.monitor.watch_levels(self.memory, equity, drawdown)
                if notices:
                    self.apply(notices, ts, self._candle_id(candle), out)
                self.settle()
            return
        self.trading_state = state
        self.settle()
        limit = risk.config.max_drawdown_pct
        alert = self.alert(
            ts,
            "CRITICAL",
            reasons.DRAWDOWN_LIMIT_HIT,
            f"Maximum drawdown reached: {drawdown:.2f}% from the high-water mark "
            f"(limit {limit:g}%). New entries stopped.",
        )
        out.append(alert)
        out.append(self.state_event(ts, alert.event_id, reasons.DRAWDOWN_LIMIT_HIT))
        self._trip_kill_switch(ts, alert, out)

    def on_exit(
        self,
        symbol: str,
        ts: int,
        pnl: float,
        entry_price: float,
        exit_price: float,
        cause: str,
        out: list[Event],
    ) -> None:
        """A fill (event ``cause``) reduced ``symbol``'s position, realising ``pnl``:
        cooldowns and losing streaks."""
        notices = self.risk.monitor.on_exit(
            self.memory, symbol, ts, pnl, entry_price, exit_price, self.trading_state
        )
        self.apply(notices, ts, cause, out)

    def after_fill(
        self, equity: float, drawdown: float, ts: int, cause: str, out: list[Event]
    ) -> None:
        """The levels after a fill (event ``cause``): a fill can realise a loss that no later
        mark shows (flat again), which the daily drawdown, reset at midnight, would miss."""
        if self.watch_levels and not self.calm(equity, drawdown):
            notices = self.risk.monitor.watch_levels(self.memory, equity, drawdown)
            if notices:
                self.apply(notices, ts, cause, out)
            self.settle()

    def apply(self, notices: list[Notice], ts: int, cause: str, out: list[Event]) -> None:
        """Each notice is an alert; one that moves the trading state is followed by the
        RiskState it moved to; a CRITICAL one may trip the kill switch."""
        for notice in notices:
            alert = self.alert(ts, notice.level, notice.code, notice.message, cause)
            out.append(alert)
            if notice.moves_state:
                state = self.risk.monitor.trading_state(self.memory, self.trading_state)
                if state != self.trading_state:
                    self.trading_state = state
                    self.settle()
                    out.append(self.state_event(ts, alert.event_id, notice.code))
            if notice.level == "CRITICAL":
                self._trip_kill_switch(ts, alert, out)

    def _trip_kill_switch(self, ts: int, cause: Alert, out: list[Event]) -> None:
        """With ``kill_switch_on_critical``, a CRITICAL alert stops all trading for good."""
        config = self.risk.config
        memory = self.memory
        if not config.kill_switch_on_critical or config.kill_switch or memory.kill_switch_tripped:
            return
        memory.kill_switch_tripped = True
        alert = self.alert(
            ts,
            "CRITICAL",
            reasons.KILL_SWITCH_ENGAGED,
            f"Kill switch on after the CRITICAL alert {cause.code}: "
            "no order passes for the rest of the run.",
            cause.event_id,
        )
        out.append(alert)
        out.append(self.state_event(ts, alert.event_id, reasons.KILL_SWITCH_ENGAGED))

    # -- its events -------------------------------------------------------------------------

    def alert(
        self, ts: int, level: AlertLevel, code: str, message: str, cause: str | None = None
    ) -> Alert:
        return self._ids.new_event(Alert, ts, cause, level=level, code=code, message=message)

    def state_event(self, ts: int, cause: str | None, reason_code: str) -> RiskState:
        """The trading state as it stands, with the portfolio's drawdown and exposure."""
        portfolio = self._portfolio
        equity = portfolio.equity
        return self._ids.new_event(
            RiskState,
            ts,
            cause,
            trading_state=self.trading_state,
            kill_switch=self.risk.config.kill_switch or self.memory.kill_switch_tripped,
            drawdown_pct=portfolio.drawdown_pct,
            exposure_pct=portfolio.total_exposure / equity * 100.0 if equity > 0 else 0.0,
            reason_code=reason_code,
        )

    def _candle_id(self, number: int) -> str:
        return event_id_for(self._ids.run_id, "market_data", number)
