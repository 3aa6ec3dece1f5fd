"""Benchmark: reading candles from CSV alone, no engine: the per-row cost of the CSV source.

Times ``CsvCandleSource(...).candles()`` (opening, hashing, inferring, reading every row)
over seeded synthetic 1-minute candles, LF line ends and the same file with CRLF: the best
of ``--runs`` in CPU time of this process, which a busy machine disturbs less than the
wall time. The engine's own share of a backtest is measured by bench_backtest.py.

    python3 bench/bench_csv.py [--candles 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def best_of(path: Path, runs: int) -> tuple[float, int, int]:
    """(best CPU seconds to open and read the file, candles, dead letters)."""
    from streams.csv_source import CsvCandleSource

    best = float("inf")
    candles = dead = 0
    for _ in range(runs):
        bad: list[object] = []
        start = time.process_time()
        source = CsvCandleSource("SYN_USD", path)
        candles = sum(1 for _ in source.candles(bad.append))
        best = min(best, time.process_time() - start)
        dead = len(bad)
    return best, candles, dead


def main() -> None:
    from synthetic import write_candles

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lf = write_candles(Path(tmp) / f"syn_{args.candles}.csv", args.candles, seed=7)
        crlf = Path(tmp) / f"syn_{args.candles}_crlf.csv"
        crlf.write_bytes(lf.read_bytes().replace(b"\n", b"\r\n"))
        for label, path in (("LF", lf), ("CRLF", crlf)):
            seconds, candles, dead = best_of(path, args.runs)
            print(
                f"{label:5} {candles:,} candles, {dead} dead letters: {seconds:.3f} CPU s "
                f"({seconds / max(candles, 1) * 1e9:.0f} ns a row, "
                f"{candles / seconds:,.0f} rows/s)"
            )


if __name__ == "__main__":
    main()
