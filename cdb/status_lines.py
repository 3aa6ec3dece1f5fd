"""A run's status as ``cdb status`` (and ``cdb paper`` at its end) prints it."""

from __future__ import annotations

from typing import Any

from cdb.common import fmt, fmt_time


def status_lines(s: dict[str, Any]) -> list[str]:
    positions = s["open_positions"]
    held = ", ".join(
        f"{p['symbol']} {p['quantity']:g} @ {fmt(p['avg_entry_price'])}"
        f" (last {fmt(p['last_price'])}, P&L {fmt(p['unrealized_pnl'])})"
        for p in positions
    )
    lines = [
        f"Claire de Binare run {s['run_id']}  {s['status']}  strategy {s['strategy']}",
        f"  last candle    {fmt_time(s['last_candle_at'])} UTC   candles {s['candles']:,}",
        f"  equity         {fmt(s['initial_cash'])} -> {fmt(s['equity'])}"
        f"   drawdown {fmt(s['drawdown_pct'], suffix='%')}"
        f"   high-water mark {fmt(s['high_water_mark'])}",
        f"  fills          {s['fills']:,}",
        f"  open positions {held or 'none'}",
    ]
    if "lag" in s:
        lines.append(f"  lag            {s['lag']:,} events not yet in the read models")
    return lines
