"""A backtest's summary: the JSON object ``--json`` prints, and the lines printed
otherwise (the README shows them; tests pin several)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cdb import bootstrap
from cdb.common import fmt, fmt_time
from cdb.runs import BacktestResult
from projections.queries import RaisedAlert
from streams.csv_source import CandleSource


def summary_of(
    result: BacktestResult, elapsed: float, settings: bootstrap.Settings, report: Path | None
) -> dict[str, Any]:
    run, outcome = result.summary.run, result.outcome
    return {
        "run_id": outcome.run_id,
        "strategy": run["strategy_id"],
        "candles": run["candles"],
        "signals": run["signals"],
        "orders": run["orders"],
        "trades": run["fills"],
        "closed_trades": run["trades"],
        "rejected": run["rejected"],
        "rejected_by_reason": result.summary.refused,
        "dead_letters": run["dead_letters"],
        "initial_cash": run["initial_cash"],
        "final_equity": run["final_equity"],
        "return_pct": run["total_return_pct"],
        "cagr_pct": run["cagr_pct"],
        "max_drawdown_pct": run["max_drawdown_pct"],
        "sharpe": run["sharpe"],
        "sortino": run["sortino"],
        "win_rate": run["win_rate"],
        "profit_factor": run["profit_factor"],
        "expectancy": run["expectancy"],
        "exposure_time_pct": run["exposure_time_pct"],
        "log_digest": outcome.log_digest,
        "projection_digest": result.projection_digest,
        "data_dir": str(settings.data_dir),
        "log": settings.log_location,
        "store": settings.store_location,
        "report": str(report) if report else None,
        "elapsed_s": round(elapsed, 3),
    }


def _period(run: Mapping[str, Any]) -> str:
    if not run["candles"]:
        return "none (no usable candle)"
    return f"{fmt_time(run['started_at'])} to {fmt_time(run['ended_at'])} UTC"


def _by_reason(counts: dict[str, int]) -> str:
    """`` (INSUFFICIENT_CASH 40, NO_POSITION_TO_CLOSE 19)``, or nothing when none."""
    if not counts:
        return ""
    return " (" + ", ".join(f"{reason} {count:,}" for reason, count in counts.items()) + ")"


def _alerts(raised: Sequence[RaisedAlert], candles: int) -> str:
    if not raised:
        return "none"
    first = raised[0]
    # A run without candles has no time of its own: its alerts are stamped 0.
    when = f" at {fmt_time(first.timestamp)}" if candles else ""
    return f"{len(raised)} (first: {first.level} {first.code}{when})"


def summary_lines(
    s: dict[str, Any], result: BacktestResult, sources: Sequence[CandleSource]
) -> list[str]:
    data = ", ".join(f"{src.symbol} {src.interval} ({src.name})" for src in sources)
    win = None if s["win_rate"] is None else s["win_rate"] * 100
    rate = s["candles"] / s["elapsed_s"] if s["elapsed_s"] else 0
    lines = [
        f"Claire de Binare backtest {s['run_id']}  strategy {s['strategy']}",
        f"  data           {data}",
        f"  period         {_period(result.summary.run)}",
        f"  candles        {s['candles']:,}   dead letters {s['dead_letters']:,}",
        f"  signals        {s['signals']:,}   orders {s['orders']:,}   fills {s['trades']:,}"
        f"   rejected {s['rejected']:,}{_by_reason(s['rejected_by_reason'])}",
        f"  equity         {fmt(s['initial_cash'])} -> {fmt(s['final_equity'])}"
        f"   return {fmt(s['return_pct'], suffix='%')}   CAGR {fmt(s['cagr_pct'], suffix='%')}",
        f"  risk           max drawdown {fmt(s['max_drawdown_pct'], suffix='%')}"
        f"   Sharpe {fmt(s['sharpe'])}   Sortino {fmt(s['sortino'])}"
        f"   exposure time {fmt(s['exposure_time_pct'], 1, '%')}",
        f"  closed trades  {s['closed_trades']:,}   win rate {fmt(win, 1, '%')}"
        f"   profit factor {fmt(s['profit_factor'])}   expectancy {fmt(s['expectancy'])}",
        f"  alerts         {_alerts(result.summary.alerts, s['candles'])}",
        f"  log            {s['log']}   log_digest {s['log_digest']}",
        f"  read models    {s['store']}   projection_digest {s['projection_digest']}",
    ]
    if s["report"]:
        lines.append(f"  report         {s['report']}")
    lines.append(f"  elapsed        {s['elapsed_s']:.2f} s ({rate:,.0f} candles/s)")
    return lines
