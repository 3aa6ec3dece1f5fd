"""Seeded synthetic 1-minute candles: a random walk with volatility clustering and jumps."""

from __future__ import annotations

import math
import random
from pathlib import Path

START_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
MINUTE_MS = 60_000


def write_candles(path: Path, count: int, seed: int) -> Path:
    """Write ``count`` candles to ``path`` (reused when it already exists)."""
    if path.exists():
        return path
    rng = random.Random(seed)
    price = 30_000.0
    variance = 1e-6
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write("timestamp_ms,open,high,low,close,volume\n")
        for i in range(count):
            # GARCH(1,1)-like clustering, plus a rare jump.
            shock = rng.gauss(0.0, 1.0)
            variance = 2e-8 + 0.08 * variance * shock * shock + 0.9 * variance
            ret = math.sqrt(variance) * shock
            if rng.random() < 0.0005:
                ret += rng.gauss(0.0, 0.01)
            open_ = price
            close = max(price * math.exp(ret), 0.01)
            wick = math.sqrt(variance) * abs(rng.gauss(0.0, 0.5))
            high = max(open_, close) * (1.0 + wick)
            low = min(open_, close) * (1.0 - wick)
            volume = 5.0 * (1.0 + abs(shock)) * rng.random() + 0.01
            out.write(
                f"{START_MS + i * MINUTE_MS},{open_:.2f},{high:.2f},{low:.2f},{close:.2f},"
                f"{volume:.4f}\n"
            )
            price = close
    tmp.replace(path)
    return path
