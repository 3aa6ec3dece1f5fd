"""Performance statistics of a run, accumulated in O(1) per bar.

Definitions (all deterministic, all from bar-close equity and closed-trade P&L):

- bar return ``r_i = e_i / e_{i-1} - 1`` with ``e_0`` the initial cash;
- Sharpe ``mean(r) / stdev(r) * sqrt(bars_per_year)`` (sample stdev, risk-free rate 0);
- Sortino ``mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(bars_per_year)``;
- ``bars_per_year = 365 days / interval``: crypto trades every day;
- CAGR over the span from the first bar's open to the last bar's close (None where
  annualising a very short span would overflow);
- maximum drawdown from the running peak of bar-close equity (initial cash included);
- a trade is a fill that reduces a position; its P&L is net of its fee and its share of
  the entry fees; win rate, profit factor (gross profit / gross loss) and expectancy
  (mean trade P&L) are over those trades;
- exposure time: the share of bars that closed with a position open.

A statistic that is undefined (no trades, no variance, no losses) is None, never inf/NaN.
"""

from __future__ import annotations

import math

from domain.events.run import RunStatistics
from domain.state import StateModel

YEAR_MS = 365 * 24 * 60 * 60 * 1000


class PerformanceState(StateModel):
    """The accumulators of ``PerformanceTracker``; its initial cash and interval come
    from the run's configuration."""

    last_equity: float
    peak: float
    max_drawdown: float
    bars: int
    bars_in_market: int
    mean: float
    m2: float
    downside_sq: float
    trades: int
    wins: int
    losses: int
    gross_profit: float
    gross_loss: float
    pnl_sum: float
    unchanged: int
    first_timestamp: int | None
    last_timestamp: int | None


class PerformanceTracker:
    __slots__ = (
        "_bars",
        "_bars_in_market",
        "_downside_sq",
        "_first_ts",
        "_gross_loss",
        "_gross_profit",
        "_last_equity",
        "_last_ts",
        "_losses",
        "_m2",
        "_max_drawdown",
        "_mean",
        "_peak",
        "_pnl_sum",
        "_trades",
        "_unchanged",
        "_wins",
        "initial_cash",
        "interval_ms",
    )

    def __init__(self, initial_cash: float, interval_ms: int) -> None:
        self.initial_cash = initial_cash
        self.interval_ms = interval_ms
        self._last_equity = initial_cash
        self._peak = initial_cash
        self._max_drawdown = 0.0
        self._bars = 0
        self._bars_in_market = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._downside_sq = 0.0
        self._trades = 0
        self._wins = 0
        self._losses = 0
        self._gross_profit = 0.0
        self._gross_loss = 0.0
        self._pnl_sum = 0.0
        self._unchanged = 0  # zero-return bars not yet folded into mean and m2
        self._first_ts: int | None = None
        self._last_ts: int | None = None

    def state(self) -> PerformanceState:
        return PerformanceState(
            last_equity=self._last_equity,
            peak=self._peak,
            max_drawdown=self._max_drawdown,
            bars=self._bars,
            bars_in_market=self._bars_in_market,
            mean=self._mean,
            m2=self._m2,
            downside_sq=self._downside_sq,
            trades=self._trades,
            wins=self._wins,
            losses=self._losses,
            gross_profit=self._gross_profit,
            gross_loss=self._gross_loss,
            pnl_sum=self._pnl_sum,
            unchanged=self._unchanged,
            first_timestamp=self._first_ts,
            last_timestamp=self._last_ts,
        )

    def restore(self, state: PerformanceState) -> None:
        """Take ``state`` (what ``state()`` gave) as this tracker's."""
        self._last_equity = state.last_equity
        self._peak = state.peak
        self._max_drawdown = state.max_drawdown
        self._bars = state.bars
        self._bars_in_market = state.bars_in_market
        self._mean = state.mean
        self._m2 = state.m2
        self._downside_sq = state.downside_sq
        self._trades = state.trades
        self._wins = state.wins
        self._losses = state.losses
        self._gross_profit = state.gross_profit
        self._gross_loss = state.gross_loss
        self._pnl_sum = state.pnl_sum
        self._unchanged = state.unchanged
        self._first_ts = state.first_timestamp
        self._last_ts = state.last_timestamp

    def on_bar(self, timestamp: int, equity: float, in_market: bool) -> None:
        """Record one bar's closing equity (call once per bar, in time order)."""
        if self._first_ts is None:
            self._first_ts = timestamp
        self._last_ts = timestamp
        if in_market:
            self._bars_in_market += 1
        previous = self._last_equity
        if equity == previous:
            # A flat bar (most bars without a position): count it now, fold it in later.
            self._unchanged += 1
            return
        if self._unchanged:
            self._fold_unchanged()
        r = equity / previous - 1.0 if previous > 0.0 else 0.0
        self._bars += 1
        # Welford's update keeps the variance exact enough over millions of bars.
        delta = r - self._mean
        self._mean += delta / self._bars
        self._m2 += delta * (r - self._mean)
        if r < 0.0:
            self._downside_sq += r * r
        self._last_equity = equity
        if equity > self._peak:
            self._peak = equity
        elif self._peak > 0.0:
            drawdown = (self._peak - equity) / self._peak
            self._max_drawdown = max(self._max_drawdown, drawdown)

    def _fold_unchanged(self) -> None:
        """Merge the pending run of zero returns (Chan et al.'s pairwise variance update)."""
        k, n = self._unchanged, self._bars
        total = n + k
        delta = -self._mean
        self._mean += delta * k / total
        self._m2 += delta * delta * n * k / total
        self._bars = total
        self._unchanged = 0

    def on_closed_trade(self, pnl: float) -> None:
        self._trades += 1
        self._pnl_sum += pnl
        if pnl > 0.0:
            self._wins += 1
            self._gross_profit += pnl
        elif pnl < 0.0:
            self._losses += 1
            self._gross_loss -= pnl

    def result(self, final_equity: float) -> RunStatistics:
        if self._unchanged:
            self._fold_unchanged()
        bars = self._bars
        annualiser = math.sqrt(YEAR_MS / self.interval_ms) if self.interval_ms > 0 else 0.0
        sharpe: float | None = None
        sortino: float | None = None
        if bars >= 2:
            std = math.sqrt(self._m2 / (bars - 1))
            if std > 0.0:
                sharpe = self._mean / std * annualiser
            downside = math.sqrt(self._downside_sq / bars)
            if downside > 0.0:
                sortino = self._mean / downside * annualiser
        cagr: float | None = None
        if self._first_ts is not None and self._last_ts is not None and self.initial_cash > 0:
            span_ms = self._last_ts + self.interval_ms - self._first_ts
            if span_ms > 0 and final_equity > 0.0:
                years = span_ms / YEAR_MS
                growth = math.log(final_equity / self.initial_cash) / years
                # Over a span of minutes, annualising can exceed any float: then undefined.
                if growth < 700.0:
                    cagr = math.expm1(growth) * 100.0
        trades = self._trades
        return RunStatistics(
            initial_cash=self.initial_cash,
            final_equity=final_equity,
            total_return_pct=(final_equity / self.initial_cash - 1.0) * 100.0
            if self.initial_cash > 0
            else 0.0,
            cagr_pct=cagr,
            max_drawdown_pct=self._max_drawdown * 100.0,
            sharpe=sharpe,
            sortino=sortino,
            win_rate=self._wins / trades if trades else None,
            profit_factor=self._gross_profit / self._gross_loss if self._gross_loss > 0 else None,
            expectancy=self._pnl_sum / trades if trades else None,
            trades=trades,
            exposure_time_pct=self._bars_in_market / bars * 100.0 if bars else 0.0,
            bars=bars,
        )
