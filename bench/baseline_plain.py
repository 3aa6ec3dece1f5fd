"""The floor of pure Python: SMA(10/30) cross on a CSV, fills at the next open, no log.

No events, no storage, no validation: what a bare loop costs. Usage:
    python3 bench/baseline_plain.py FILE.csv
"""

from __future__ import annotations

import sys


def main(path: str) -> None:
    fast_n, slow_n = 10, 30
    closes: list[float] = []
    cash, qty, fee = 10_000.0, 0.0, 0.001
    pending: str | None = None
    last_side = 0  # sign of fast - slow on the last candle where they differed
    candles = 0
    with open(path, encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            _ts, o, _h, _l, c, _v = line.split(",")
            open_, close = float(o), float(c)
            candles += 1
            if pending == "BUY" and qty == 0.0:
                qty = 0.01
                cash -= qty * open_ * (1 + fee)
            elif pending == "SELL" and qty > 0.0:
                cash += qty * open_ * (1 - fee)
                qty = 0.0
            pending = None
            closes.append(close)
            if len(closes) > slow_n:
                del closes[0]
            if len(closes) == slow_n:
                fast = sum(closes[-fast_n:]) / fast_n
                slow = sum(closes) / slow_n
                side = (fast > slow) - (fast < slow)
                if side:  # a tie is no side: a touch that returns is no cross
                    if last_side and side != last_side:
                        pending = "BUY" if side > 0 else "SELL"
                    last_side = side
    print(f"candles={candles} equity={cash + qty * close:.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
