"""What a run shows while it runs: the backtest's bar on a terminal, a live run's line a
second and its metrics. For people only: nothing decides on the wall clock read here."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from cdb.common import fmt, fmt_time
from domain.events import Candle, Event
from streams.observability import CANDLE_TO_PROJECTED_ORDER_RESULT, Metrics


def progress_bar(total: int) -> Callable[[int], None] | None:
    """A bar of the bytes of candle files read, on stderr when it is a terminal."""
    if not sys.stderr.isatty() or total <= 0:
        return None
    done = 0
    shown = -1

    def update(nbytes: int) -> None:
        nonlocal done, shown
        done += nbytes
        percent = min(100, done * 100 // total)
        if percent != shown:
            shown = percent
            bar = "#" * (percent // 4)
            sys.stderr.write(f"\r  reading candles [{bar:<25}] {percent:3d}%")
            if percent == 100:
                sys.stderr.write("\r" + " " * 50 + "\r")
            sys.stderr.flush()

    return update


class LiveProgress:
    """A live run's observer (``streams.live.LiveObserver``): metrics from what the run
    does, and a progress line about once a second."""

    def __init__(self, metrics: Metrics, quiet: bool) -> None:
        self._metrics = metrics
        self._quiet = quiet
        self.run_id = ""
        self._last_line = 0.0
        self.candles = 0
        self.fills = 0
        self.equity: float | None = None
        self.drawdown: float | None = None
        self.last_ts: int | None = None
        self.behind_now = 0

    def started(self, run_id: str, resumed_at: int) -> None:
        self.run_id = run_id
        self.candles = resumed_at
        what = f"taken up at candle {resumed_at:,}" if resumed_at else "started"
        if not self._quiet:
            sys.stderr.write(f"cdb: run {run_id} {what}\n")

    def folded(self, candles: Sequence[Candle], events: Sequence[Event]) -> None:
        if candles:
            self._metrics.candles_published(self.run_id, candles)
            self.candles += len(candles)
            self.last_ts = candles[-1].timestamp
        self._metrics.events_out(events)
        for event in events:
            if event.type == "order_result" and getattr(event, "status", None) == "FILLED":
                self.fills += 1
            elif event.type == "portfolio_snapshot":
                self.equity = getattr(event, "equity", None)
                self.drawdown = getattr(event, "drawdown_pct", None)
        self._line()

    def projected(self, latencies: Sequence[float]) -> None:
        for seconds in latencies:
            self._metrics.latency(CANDLE_TO_PROJECTED_ORDER_RESULT, seconds)

    def behind(self, candles: int) -> None:
        self.behind_now = candles
        self._metrics.lag("market_data", 0, candles)

    def _line(self) -> None:
        now = time.monotonic()
        if self._quiet or not self.candles or now - self._last_line < 1.0:
            return
        self._last_line = now
        sys.stderr.write(
            f"  {fmt_time(self.last_ts)}  candles {self.candles:,}  fills {self.fills:,}"
            f"  equity {fmt(self.equity)}  drawdown {fmt(self.drawdown, suffix='%')}"
            f"  behind {self.behind_now:,}\n"
        )
