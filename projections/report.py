"""A self-contained HTML report of one run: statistics, equity and drawdown, trades, alerts.

No script, no external asset: the charts are inline SVG, so the file opens offline.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from projections import tables

_W, _H, _PAD = 900, 220, 40


def _time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return html.escape(str(value))


def _polyline(points: Sequence[tuple[int, float]], invert: bool = False) -> str:
    """An SVG chart of (time, value) points scaled into the plot area."""
    if len(points) < 2:
        return f'<svg viewBox="0 0 {_W} {_H}"><text x="10" y="20">not enough data</text></svg>'
    t0, t1 = points[0][0], points[-1][0]
    values = [v for _, v in points]
    lo, hi = min(values), max(values)
    if hi == lo:
        hi = lo + 1.0
    span_t = max(t1 - t0, 1)

    def xy(t: int, v: float) -> str:
        x = _PAD + (t - t0) / span_t * (_W - 2 * _PAD)
        frac = (v - lo) / (hi - lo)
        y = _PAD / 2 + (frac if invert else 1 - frac) * (_H - _PAD)
        return f"{x:.1f},{y:.1f}"

    path = " ".join(xy(t, v) for t, v in points)
    colour = "#b03030" if invert else "#2060a0"
    labels = (
        f'<text x="2" y="{_PAD / 2 + 4:.0f}" font-size="11">{_num(lo if invert else hi)}</text>'
        f'<text x="2" y="{_H - _PAD / 2:.0f}" font-size="11">{_num(hi if invert else lo)}</text>'
        f'<text x="{_PAD}" y="{_H - 4}" font-size="11">{_time(t0)}</text>'
        f'<text x="{_W - _PAD - 100}" y="{_H - 4}" font-size="11">{_time(t1)}</text>'
    )
    return (
        f'<svg viewBox="0 0 {_W} {_H}" width="100%" role="img">'
        f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#fafafa"/>'
        f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>'
        f"{labels}</svg>"
    )


def render_report(engine: Engine, run_id: str) -> str:
    with engine.connect() as conn:
        run = (
            conn.execute(select(tables.runs).where(tables.runs.c.run_id == run_id))
            .mappings()
            .first()
        )
        if run is None:
            raise LookupError(f"no run {run_id!r} in the read models")
        curve = (
            conn.execute(
                select(tables.equity_curve)
                .where(tables.equity_curve.c.run_id == run_id)
                .order_by(tables.equity_curve.c.sequence)
            )
            .mappings()
            .all()
        )
        fills = (
            conn.execute(
                select(tables.trades)
                .where(tables.trades.c.run_id == run_id)
                .order_by(tables.trades.c.timestamp, tables.trades.c.order_id)
            )
            .mappings()
            .all()
        )
        raised = (
            conn.execute(
                select(tables.alerts)
                .where(tables.alerts.c.run_id == run_id)
                .order_by(tables.alerts.c.sequence)
            )
            .mappings()
            .all()
        )
    stats = [
        ("Strategy", run["strategy_id"]),
        ("Initial cash", _num(run["initial_cash"])),
        ("Final equity", _num(run["final_equity"])),
        ("Total return %", _num(run["total_return_pct"])),
        ("CAGR %", _num(run["cagr_pct"])),
        ("Max drawdown %", _num(run["max_drawdown_pct"])),
        ("Sharpe", _num(run["sharpe"])),
        ("Sortino", _num(run["sortino"])),
        ("Win rate", _num(run["win_rate"], 3)),
        ("Profit factor", _num(run["profit_factor"], 3)),
        ("Expectancy", _num(run["expectancy"])),
        ("Closed trades", _num(run["trades"])),
        ("Exposure time %", _num(run["exposure_time_pct"])),
        ("Candles", _num(run["candles"])),
        ("Signals", _num(run["signals"])),
        ("Orders / fills / rejected", f"{run['orders']} / {run['fills']} / {run['rejected']}"),
        ("Dead letters", _num(run["dead_letters"])),
        ("Config hash", run["config_hash"]),
    ]
    stat_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in stats
    )
    trade_rows = "".join(
        "<tr>"
        f"<td>{_time(t['timestamp'])}</td><td>{html.escape(t['symbol'])}</td>"
        f"<td>{t['side']}</td><td>{_num(t['quantity'], 6)}</td><td>{_num(t['price'], 4)}</td>"
        f"<td>{_num(t['fee'], 4)}</td><td>{_num(t['realized_pnl'])}</td>"
        "</tr>"
        for t in fills
    )
    alert_rows = (
        "".join(
            f"<tr><td>{_time(a['timestamp'])}</td><td>{a['level']}</td><td>{a['code']}</td>"
            f"<td>{html.escape(a['message'])}</td></tr>"
            for a in raised
        )
        or '<tr><td colspan="4">none</td></tr>'
    )
    equity_chart = _polyline([(p["timestamp"], p["equity"]) for p in curve])
    drawdown_chart = _polyline([(p["timestamp"], p["drawdown_pct"]) for p in curve], invert=True)
    title = f"Claire de Binare: run {html.escape(run_id)}"
    version = html.escape(run["code_version"] or "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1000px}}
table{{border-collapse:collapse;margin:1em 0}} td,th{{padding:2px 10px;text-align:left;
border-bottom:1px solid #ddd;font-variant-numeric:tabular-nums}}
th{{background:#f2f2f2}} h2{{margin-top:1.5em}}
</style></head><body>
<h1>{title}</h1>
<p>{_time(run["started_at"])} to {_time(run["ended_at"])} &middot; {version}</p>
<h2>Statistics</h2><table>{stat_rows}</table>
<h2>Equity</h2>{equity_chart}
<h2>Drawdown % from the high-water mark</h2>{drawdown_chart}
<h2>Alerts</h2>
<table><tr><th>Time</th><th>Level</th><th>Code</th><th>Message</th></tr>{alert_rows}</table>
<h2>Trades ({len(fills)} fills)</h2>
<table><tr><th>Time</th><th>Symbol</th><th>Side</th><th>Quantity</th><th>Price</th><th>Fee</th>
<th>Realised P&amp;L</th></tr>
{trade_rows}</table>
</body></html>
"""
