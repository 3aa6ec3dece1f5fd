"""A fault campaign: `cdb backtest` killed with SIGKILL at seeded random moments, each
kill followed at once by a rerun in the same data directory, on SQLite and on Postgres.

Every rerun must succeed with the clean run's digests; `log digest --run-id` must equal
the digest it printed; no process of the killed run may remain; and no event of a killed
attempt may be in the log or the read models (each signal's event id appears once).
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from bench.synthetic import write_candles
from projections.digest import projection_digest
from projections.store import open_store, sqlite_url
from streams.digest import log_digest
from streams.embedded_log import EmbeddedLog
from tests.support.faults import ROOT, cdb_command, run_cdb, wait_until_gone

KILLS = 10
CANDLES = 30_000


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_candles(tmp_path_factory.mktemp("campaign") / "SYN_USD.csv", CANDLES, seed=3)


def _backtest(data_dir: Path, store: str | None, data: Path) -> list[str]:
    places = ["--data-dir", str(data_dir)] + (["--store", store] if store else [])
    return cdb_command(*places, "backtest", "--data", str(data), "--json", "--no-progress")


def _store_url(data_dir: Path, store: str | None) -> str:
    return store or sqlite_url(data_dir)


def _digests(data_dir: Path, store: str | None, run_id: str) -> tuple[str, str]:
    """The log and projection digests of ``run_id`` as the files and tables hold them."""
    log = EmbeddedLog(data_dir / "log")
    engine = open_store(_store_url(data_dir, store))
    try:
        return log_digest(log, run_id), projection_digest(engine, run_id)
    finally:
        engine.dispose()


def _writing_from(data_dir: Path, run: subprocess.Popen[bytes]) -> float:
    """Wait until the backtest ``run`` in ``data_dir`` has taken the log's writer lock;
    when it did."""
    commit = data_dir / "log" / "COMMIT"
    deadline = time.monotonic() + 60
    while not commit.exists():
        if run.poll() is not None:
            raise AssertionError(f"the backtest ended early: {run.communicate()}")
        assert time.monotonic() < deadline, "the backtest never opened its log"
        time.sleep(0.002)
    return time.monotonic()


def _committed_after(data_dir: Path, run: subprocess.Popen[bytes]) -> float:
    """Wait until the backtest ``run`` has committed its run; when it did."""
    commit = data_dir / "log" / "COMMIT"
    empty = commit.read_bytes()
    while commit.read_bytes() == empty and run.poll() is None:
        time.sleep(0.002)
    return time.monotonic()


def _event_ids_once(data_dir: Path, topic: str) -> None:
    values = [r.value for r in EmbeddedLog(data_dir / "log").read(topic, 0)]
    ids = [orjson.loads(v)["event_id"] for v in values]
    assert len(ids) == len(set(ids)), f"{topic}: {len(ids) - len(set(ids))} events twice"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_at_random_moments_then_an_immediate_rerun(
    tmp_path: Path, candles: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    store = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    clean_run = subprocess.Popen(
        _backtest(tmp_path / "clean", store, candles),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    writing = _writing_from(tmp_path / "clean", clean_run)
    committed = _committed_after(tmp_path / "clean", clean_run) - writing
    out, err = clean_run.communicate(timeout=300)
    took = time.monotonic() - writing  # from taking the log's lock to the end
    assert clean_run.returncode == 0, err
    expected = orjson.loads(out)
    rng = random.Random(f"campaign-{backend}")
    # Moments from the writer taking the lock: most while it reads and writes candles,
    # before its commit; some after, while it projects, and a little after the end.
    moments = sorted(
        [rng.uniform(0.0, committed * 0.8) for _ in range(KILLS - 3)]
        + [rng.uniform(committed * 0.8, took * 1.1) for _ in range(3)]
    )
    outcomes = []
    for i, moment in enumerate(moments):
        data_dir = tmp_path / f"kill-{i}"
        victim = subprocess.Popen(
            _backtest(data_dir, store, candles),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        writing = _writing_from(data_dir, victim)
        time.sleep(max(0.0, moment - (time.monotonic() - writing)))
        victim.kill()
        victim.communicate(timeout=10)  # the output ends: no helper holds it
        assert wait_until_gone(str(data_dir), timeout=5) == [], f"leftovers after {moment:.2f} s"
        rerun = run_cdb(*_backtest(data_dir, store, candles)[3:])
        assert rerun.returncode == 0, f"rerun after a kill at {moment:.2f} s: {rerun.stderr}"
        summary = orjson.loads(rerun.stdout)
        if summary["run_id"] == expected["run_id"]:
            # Nothing of the killed attempt was committed: the rerun is the clean run.
            assert summary["log_digest"] == expected["log_digest"], moment
            assert summary["projection_digest"] == expected["projection_digest"], moment
            outcomes.append("rerun")
        else:
            # The kill came after the run's commit: it is whole in the log, and the rerun
            # is the next run of the same backtest.
            assert summary["run_id"] == f"{expected['run_id']}-2", moment
            whole = _digests(data_dir, store, expected["run_id"])
            assert whole == (expected["log_digest"], expected["projection_digest"]), moment
            outcomes.append("completed before the kill")
        assert _digests(data_dir, store, summary["run_id"])[0] == summary["log_digest"]
        for topic in ("signals", "market_data", "portfolio"):
            _event_ids_once(data_dir, topic)
    assert outcomes.count("rerun") >= KILLS // 2, outcomes  # most kills hit a run in flight
