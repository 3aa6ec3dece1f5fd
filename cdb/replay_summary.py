"""A replay's comparison with the original: the JSON object ``--json`` prints, and the
lines printed otherwise."""

from __future__ import annotations

from typing import Any

import orjson

from cdb.common import fmt
from streams.replay import ReplayOutcome


def summary_of(outcome: ReplayOutcome) -> dict[str, Any]:
    c = outcome.comparison
    divergence = c.first_divergence
    return {
        "run_id": outcome.run_id,
        "original_run_id": outcome.original_run_id,
        "topic": outcome.topic,
        "partition": outcome.partition,
        "from_offset": outcome.from_offset,
        "to_offset": outcome.to_offset,
        "candles": outcome.candles,
        "restored_from_snapshot_at_candle": outcome.restored_from,
        "refolded_candles": outcome.refolded,
        "events_compared": c.events,
        "identical": c.identical,
        "first_divergence": None
        if divergence is None
        else {
            "topic": divergence.topic,
            "offset": divergence.offset,
            "original": divergence.original,
            "replayed": divergence.replayed,
        },
        "fills": {"original": c.fills[0], "replayed": c.fills[1]},
        "trades_added": c.trades_added,
        "trades_removed": c.trades_removed,
        "final_equity": {"original": c.final_equity[0], "replayed": c.final_equity[1]},
        "max_drawdown_pct": {"original": c.max_drawdown_pct[0], "replayed": c.max_drawdown_pct[1]},
    }


def summary_lines(s: dict[str, Any]) -> list[str]:
    restored = s["restored_from_snapshot_at_candle"]
    state = (
        f"the snapshot at candle {restored:,}" if restored is not None else "the run's first candle"
    )
    out = [
        f"replay  {s['run_id']}  of run {s['original_run_id']}",
        f"  range          {s['topic']}/{s['partition']} offsets "
        f"{s['from_offset']}..{s['to_offset']}  ({s['candles']:,} candles replayed)",
        f"  state          from {state}, {s['refolded_candles']:,} candles refolded to the range",
    ]
    if s["identical"]:
        out.append(
            f"  result         identical: {s['events_compared']:,} events equal the original's"
        )
    else:
        d = s["first_divergence"]
        where = f"{d['topic']} offset {d['offset']}" if d["offset"] is not None else d["topic"]
        out.append(f"  result         diverges first at {where}")
        out.append(f"    original     {orjson.dumps(d['original']).decode()}")
        out.append(f"    replayed     {orjson.dumps(d['replayed']).decode()}")
    equity, drawdown = s["final_equity"], s["max_drawdown_pct"]
    fills = s["fills"]
    out.append(
        f"  trades         {fills['original']} -> {fills['replayed']} fills; "
        f"+{len(s['trades_added'])} added, -{len(s['trades_removed'])} removed"
    )
    out.append(f"  final equity   {fmt(equity['original'])} -> {fmt(equity['replayed'])}")
    out.append(
        f"  max drawdown   {fmt(drawdown['original'], suffix='%')} -> "
        f"{fmt(drawdown['replayed'], suffix='%')}"
    )
    return out
