"""A damaged SQLite read-model file is moved aside and the read models are made again from
the log (they are disposable); a locked one is not taken for damaged."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from cdb.cli import main
from projections.rebuild import rebuild
from projections.sqlite_damage import damage_of
from streams.embedded_log import EmbeddedLog
from tests.support.rebuilds import btc_slice

GARBAGE = b"these bytes are not a SQLite database " * 200


def _backtest(
    capsys: pytest.CaptureFixture[str], data_dir: Path, csv: Path
) -> tuple[dict[str, Any], str]:
    """The run's summary and what it wrote on stderr."""
    argv = ["--data-dir", str(data_dir), "backtest", "--data", str(csv), "--json", "--no-progress"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary: dict[str, Any] = orjson.loads(captured.out)
    return summary, captured.err


def _settled(store: Path) -> None:
    """Every committed page in the file itself, no write-ahead log beside it."""
    with sqlite3.connect(store) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _the_warning(err: str, store: Path) -> str:
    """The one warning line of ``err``; it names the file and where it went."""
    assert "Traceback" not in err and "cdb: error" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("cdb: warning: ")]
    assert len(lines) == 1, err
    assert str(store) in lines[0] and f"{store}.corrupt-1" in lines[0], lines[0]
    return lines[0]


def test_a_store_that_is_not_a_database_is_moved_aside_and_refilled_by_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    first, _ = _backtest(capsys, data, btc_slice(tmp_path, 0, 2_000))
    store = data / "projections.sqlite"
    _settled(store)
    store.write_bytes(GARBAGE)
    second, err = _backtest(capsys, data, btc_slice(tmp_path, 2_000, 2_000))
    assert "file is not a database" in _the_warning(err, store)
    assert (tmp_path / "data" / "projections.sqlite.corrupt-1").read_bytes() == GARBAGE
    for run in (first, second):  # the first run's rows too: refolded from the log
        argv = ["--data-dir", str(data), "projections", "digest", "--run-id", run["run_id"]]
        assert main(argv) == 0
        assert capsys.readouterr().out.strip() == run["projection_digest"]


def test_a_malformed_store_is_moved_aside_by_a_rebuild_and_made_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pages of the candles table overwritten: opening the store does not notice (it
    reads the schema and the checkpoints), the rebuild does, and recovers."""
    data = tmp_path / "data"
    run, _ = _backtest(capsys, data, btc_slice(tmp_path, 0, 3_000))
    store = data / "projections.sqlite"
    _settled(store)
    reader = sqlite3.connect(store)
    (page_size,) = reader.execute("PRAGMA page_size").fetchone()
    (root,) = reader.execute("SELECT rootpage FROM sqlite_master WHERE name = 'candles'").fetchone()
    reader.close()
    damaged = bytearray(store.read_bytes())
    start = (root - 1) * page_size
    damaged[start : start + page_size] = GARBAGE[:page_size].ljust(page_size, b"!")
    store.write_bytes(bytes(damaged))
    reader = sqlite3.connect(store)  # the damage is real: SQLite itself says so
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        reader.execute("SELECT count(*) FROM candles").fetchone()
    reader.close()

    argv = ["--data-dir", str(data), "projections", "rebuild", "--run-id", run["run_id"]]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "damaged" in _the_warning(captured.err, store)
    assert captured.out.strip() == run["projection_digest"]
    assert Path(f"{store}.corrupt-1").read_bytes() == bytes(damaged)


def test_a_locked_store_is_not_taken_for_a_damaged_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rebuild that cannot get the write lock (another writer holds it) fails with
    "database is locked", and the file stays where it is, untouched."""
    data = tmp_path / "data"
    run, _ = _backtest(capsys, data, btc_slice(tmp_path, 0, 1_000))
    store = data / "projections.sqlite"
    holder = sqlite3.connect(store, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        # An engine of the test's own that waits a tenth of a second for a lock, not five.
        engine = create_engine(f"sqlite:///{store}", connect_args={"timeout": 0.1})
        try:
            with (
                EmbeddedLog(data / "log") as log,
                pytest.raises(OperationalError, match="database is locked") as raised,
            ):
                rebuild(log, engine)
            assert damage_of(raised.value) is None
        finally:
            engine.dispose()
    finally:
        holder.rollback()
        holder.close()
    assert not list(data.glob("projections.sqlite.corrupt*"))
    argv = ["--data-dir", str(data), "projections", "digest", "--run-id", run["run_id"]]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == run["projection_digest"]
