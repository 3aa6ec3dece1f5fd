"""backtrader running the same long-only SMA(10/30) cross, for comparison.

backtrader is not a dependency of the project: `python3 -m pip install backtrader`.
Usage: python3 bench/baseline_backtrader.py FILE.csv
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import backtrader as bt  # type: ignore[import-untyped]


class EpochCsv(bt.feeds.GenericCSVData):  # type: ignore[misc]
    params = (
        (
            "dtformat",
            lambda text: datetime.fromtimestamp(int(text) / 1000, tz=UTC).replace(tzinfo=None),
        ),
        ("datetime", 0),
        ("open", 1),
        ("high", 2),
        ("low", 3),
        ("close", 4),
        ("volume", 5),
        ("openinterest", -1),
        ("timeframe", bt.TimeFrame.Minutes),
        ("compression", 1),
    )


class SmaCross(bt.Strategy):  # type: ignore[misc]
    def __init__(self) -> None:
        self.cross = bt.ind.CrossOver(bt.ind.SMA(period=10), bt.ind.SMA(period=30))

    def next(self) -> None:
        if not self.position and self.cross > 0:
            self.buy(size=0.01)
        elif self.position and self.cross < 0:
            self.close()


def main(path: str) -> None:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(EpochCsv(dataname=path))
    cerebro.addstrategy(SmaCross)
    cerebro.broker.setcash(10_000.0)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.run()
    print(f"equity={cerebro.broker.getvalue():.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
