"""The golden run: two small candle files, one risk configuration, and the results they must
give, recorded in ``expected.json`` beside this file.

Any change to what the engine decides or writes shows up here as a failed comparison, and
goes in only as a reviewed change of ``expected.json`` (see README.md in this directory).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.golden import golden_backtest_args
from tests.support.processes import default_settings_env

GOLDEN = Path(__file__).resolve().parent
EXPECTED = GOLDEN / "expected.json"
# Set to 1 to rewrite EXPECTED from this run instead of comparing with it.
UPDATE_ENV = "CDB_UPDATE_GOLDEN"
BACKTEST = [*golden_backtest_args(), "--json"]


def _golden_summary(workdir: Path) -> dict[str, Any]:
    """``cdb backtest --json`` of the golden run, run in ``workdir`` (so no ``.env`` of the
    project is read) into a data directory of its own, with no setting from the
    environment (a ``CDB_RISK__*`` override or another store would change the run)."""
    done = subprocess.run(
        [sys.executable, "-m", "cdb", "--data-dir", str(workdir / "var"), *BACKTEST],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env=default_settings_env(),
    )
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def recorded(summary: dict[str, Any]) -> dict[str, Any]:
    """What the golden run records of a backtest summary: identities and digests exactly,
    counts exactly, money to the cent, the drawdown to 1/10,000 of a percentage point."""
    return {
        "run_id": summary["run_id"],
        "log_digest": summary["log_digest"],
        "projection_digest": summary["projection_digest"],
        "candles": summary["candles"],
        "dead_letters": summary["dead_letters"],
        "signals": summary["signals"],
        "orders": summary["orders"],
        "fills": summary["trades"],
        "closed_trades": summary["closed_trades"],
        "rejected": summary["rejected"],
        "rejected_by_reason": dict(sorted(summary["rejected_by_reason"].items())),
        "final_equity": round(summary["final_equity"], 2),
        "max_drawdown_pct": round(summary["max_drawdown_pct"], 4),
    }


def _differences(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    return [
        f"  {key}: expected {expected.get(key)!r}, got {got.get(key)!r}"
        for key in sorted(set(expected) | set(got))
        if expected.get(key) != got.get(key)
    ]


def test_the_golden_run_gives_the_recorded_results(tmp_path: Path) -> None:
    got = recorded(_golden_summary(tmp_path))
    # What the golden run is for, whatever its numbers: bad rows, trades, refusals.
    assert got["dead_letters"] > 0 and got["closed_trades"] > 0, got
    assert len(got["rejected_by_reason"]) >= 3, got
    if os.environ.get(UPDATE_ENV) == "1":
        EXPECTED.write_text(json.dumps(got, indent=2) + "\n", encoding="utf-8")
        return
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))
    differences = _differences(expected, got)
    assert not differences, (
        "the golden run's results moved:\n"
        + "\n".join(differences)
        + "\nIf this change to results is intended, rewrite tests/golden/expected.json with"
        f" `{UPDATE_ENV}=1 python3 -m pytest -p no:cacheprovider tests/golden` and commit it"
        " with a message that says why the results moved (see tests/golden/README.md)."
    )
