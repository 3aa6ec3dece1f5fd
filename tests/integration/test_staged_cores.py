"""The staged topology's cores give the fused engine's events, whatever the order in which
records reach them and whichever stage restarts mid-run (``streams.staged``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.support.golden import GOLDEN_RISK, golden_backtest_args
from tests.support.staged_bus import Bus, run_inputs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_RISK = ROOT / "docs" / "examples" / "risk.toml"


@pytest.fixture(scope="module", params=["golden risk rules", "adaptive intensity"])
def fused_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fused backtest's data directory: the golden run, under the golden risk rules or
    the example's (which turn the adaptive intensity on)."""
    risk = GOLDEN_RISK if request.param == "golden risk rules" else EXAMPLE_RISK
    data_dir = tmp_path_factory.mktemp("fused")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cdb",
            "--data-dir",
            str(data_dir),
            *golden_backtest_args(risk),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
        timeout=300,
    )
    return data_dir / "log"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_stages_write_the_fused_engines_events_in_any_delivery_order(
    fused_run: Path, seed: int
) -> None:
    inputs, fused = run_inputs(fused_run)
    bus = Bus(inputs, seed)
    bus.run()
    staged = {t: v for t, v in bus.topics.items() if t not in inputs or t == "runs"}
    staged.pop("stage_control")
    fused["runs"] = inputs["runs"] + fused["runs"]
    assert sorted(staged) == sorted(fused)
    for topic, values in fused.items():
        assert staged[topic] == values, topic
    kinds = {orjson.loads(v)["type"] for values in fused.values() for v in values}
    assert {"signal", "order", "order_result", "position_state", "alert"} <= kinds, kinds


@pytest.mark.parametrize("seed", [4, 5])
def test_a_stage_restarted_mid_run_writes_every_event_exactly_once(
    fused_run: Path, seed: int
) -> None:
    inputs, fused = run_inputs(fused_run)
    bus = Bus(inputs, seed)
    assert bus.run(restarts=6) == 6  # each stage twice
    fused["runs"] = inputs["runs"] + fused["runs"]
    for topic, values in fused.items():
        assert bus.topics[topic] == values, topic


def test_an_agent_polls_less_once_idle_and_as_often_again_when_records_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fetch wait follows the agent's traffic: long after IDLE_AFTER_S without
    records, short again at the next record; told once per change, not at every check."""
    from streams import stage_agents

    told: list[bool] = []
    runner = stage_agents.StageRunner("execution", None, None, told.append)
    runner.check_idle()
    assert told == []  # just started: not idle yet
    monkeypatch.setattr(stage_agents, "IDLE_AFTER_S", 0.0)
    runner.check_idle()
    runner.check_idle()
    assert told == [True]
    runner.records_came()
    runner.records_came()
    assert told == [True, False]
