"""The code version names the code that decides, and a snapshot taken by other deciding
code is refused with a reason: the state is refolded from the start instead."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.backtest import code_version as recorded_code_version
from streams.code_identity import DOMAIN_ROOT, code_version, domain_digest, package_version
from streams.snapshots import Snapshot, SnapshotStore

ROOT = Path(__file__).resolve().parent.parent.parent
CANDLES = ROOT / "tests" / "golden" / "golden_BTC-USD_30m.csv"
RULES = Path("risk") / "rules.py"
# A constant of the order-rate rules, which the default configuration does not use: the
# changed code decides these runs exactly as before, and is other deciding code all the same.
CONSTANT = "HOUR_MS = 60 * MINUTE_MS"


def _changed_domain(tmp_path: Path) -> Path:
    copy = tmp_path / "domain"
    shutil.copytree(DOMAIN_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    rules = copy / RULES
    source = rules.read_text(encoding="utf-8")
    assert source.count(CONSTANT) == 1
    rules.write_text(source.replace(CONSTANT, "HOUR_MS = 61 * MINUTE_MS"), encoding="utf-8")
    return copy


def test_the_code_version_names_the_package_and_the_deciding_code() -> None:
    version = code_version()
    assert re.fullmatch(r"claire-de-binare \S+ domain:[0-9a-f]{12}", version), version
    assert version == f"claire-de-binare {package_version()} domain:{domain_digest(DOMAIN_ROOT)}"
    assert recorded_code_version() == version  # what run metadata and snapshots record


def test_prose_and_layout_do_not_move_it_and_a_rule_does(tmp_path: Path) -> None:
    copy = tmp_path / "domain"
    shutil.copytree(DOMAIN_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert domain_digest(copy) == domain_digest(DOMAIN_ROOT)
    rules = copy / RULES
    source = rules.read_text(encoding="utf-8")
    reworded = re.sub(r'^"""[^\n]*', '"""Reworded, every word.', source, count=1)
    reworded = reworded.replace(CONSTANT, f"{CONSTANT}  # a comment\n\n")
    assert reworded != source
    rules.write_text(reworded, encoding="utf-8")
    assert domain_digest(copy) == domain_digest(DOMAIN_ROOT)
    rules.write_text(source.replace(CONSTANT, "HOUR_MS = 61 * MINUTE_MS"), encoding="utf-8")
    assert domain_digest(copy) != domain_digest(DOMAIN_ROOT)
    rules.write_text(source, encoding="utf-8")
    (copy / "risk" / "extra_rule.py").write_text("LIMIT = 1\n", encoding="utf-8")
    assert domain_digest(copy) != domain_digest(DOMAIN_ROOT)  # a new module decides too


def _snapshot(candles: int, version: str) -> Snapshot:
    return Snapshot("bt-1", 0, candles, candles, version, b'{"state_version":1}')


def test_the_store_passes_over_a_snapshot_of_other_code_with_a_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = (
        f"claire-de-binare {package_version()} domain:{domain_digest(_changed_domain(tmp_path))}"
    )
    assert other != code_version()
    store = SnapshotStore(tmp_path / "snapshots")
    store.write(_snapshot(2048, other))
    with caplog.at_level(logging.WARNING, logger="cdb.snapshots"):
        assert store.nearest("bt-1", 5000, code_version()) is None
        assert store.nearest("bt-1", 5000, code_version()) is None  # said once is enough
        assert store.nearest("bt-1", 5000, other) is not None
    assert [r.getMessage() for r in caplog.records] == [
        f"snapshot of run bt-1 at candle 2048 was taken by other deciding code ({other}; "
        f"this is {code_version()}): refolding from the start"
    ]
    caplog.clear()
    store.write(_snapshot(1024, code_version()))
    with caplog.at_level(logging.WARNING, logger="cdb.snapshots"):
        found = SnapshotStore(tmp_path / "snapshots").nearest("bt-1", 5000, code_version())
    assert found is not None and found.candles == 1024
    assert caplog.records[0].getMessage().endswith("restoring the one at candle 1024")


def _cdb(cwd: Path, data_dir: Path, *argv: str) -> tuple[dict[str, Any], str]:
    """``cdb --data-dir data_dir argv --json`` run from ``cwd`` (whose packages it imports)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDB_", "POSTGRES_"))}
    done = subprocess.run(
        [sys.executable, "-m", "cdb", "--data-dir", str(data_dir), *argv, "--json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "CDB_SNAPSHOT_EVERY": "500"},
    )
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = orjson.loads(done.stdout)
    return summary, done.stderr


def test_a_replay_by_changed_rules_refolds_from_the_start_and_gives_the_right_result(
    tmp_path: Path,
) -> None:
    """A backtest takes a snapshot at its first batch boundary after 500 candles (2,048);
    a replay from candle 2,300 restores it under the same code, and refolds the 2,300
    candles before it under a copy of the project whose risk rules changed."""
    data = tmp_path / "var"
    run, _ = _cdb(ROOT, data, "backtest", "--data", str(CANDLES), "--no-progress")
    project = tmp_path / "changed"
    for package in ("cdb", "streams", "projections"):
        shutil.copytree(
            ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    changed = domain_digest(_changed_domain(project))
    replay = ("replay", "--topic", "market_data", "--from-offset", "2300", "--to-offset", "2900")
    same, same_err = _cdb(ROOT, data, *replay, "--run-id", "same-code")
    other, other_err = _cdb(project, data, *replay, "--run-id", "other-code")
    assert same["original_run_id"] == other["original_run_id"] == run["run_id"]
    assert (same["restored_from_snapshot_at_candle"], same["refolded_candles"]) == (2048, 252)
    assert "other deciding code" not in same_err
    assert (other["restored_from_snapshot_at_candle"], other["refolded_candles"]) == (None, 2300)
    [line] = [line for line in other_err.splitlines() if "other deciding code" in line]
    assert f"this is claire-de-binare {package_version()} domain:{changed})" in line
    assert line.endswith("refolding from the start")
    # The right result either way: the changed rule binds nowhere in this run.
    for replayed in (same, other):
        assert replayed["identical"] is True
        assert replayed["candles"] == 601
    assert {k: v for k, v in same.items() if k not in _OWN} == {
        k: v for k, v in other.items() if k not in _OWN
    }


# What differs between two replays of one range by design: their own run ids, and where
# their state came from.
_OWN = {"run_id", "restored_from_snapshot_at_candle", "refolded_candles"}
