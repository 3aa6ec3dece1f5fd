"""A RiskConfig from TOML, YAML or JSON plus environment overrides, validated as a whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cdb.risk_file import RiskConfigError, load_risk_config, risk_config_from
from domain.risk import RiskConfig

ROOT = Path(__file__).resolve().parent.parent.parent

SAME = {
    "risk.toml": 'max_drawdown_pct = 12.5\n[sizing]\nmode = "equity_at_risk"\nrisk_pct = 4\n',
    "risk.yaml": "max_drawdown_pct: 12.5\nsizing:\n  mode: equity_at_risk\n  risk_pct: 4\n",
    "risk.json": '{"max_drawdown_pct": 12.5, "sizing": {"mode": "equity_at_risk", "risk_pct": 4}}',
}


@pytest.mark.parametrize("name", sorted(SAME))
def test_toml_yaml_and_json_give_the_same_configuration(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(SAME[name], encoding="utf-8")
    config = load_risk_config(path)
    assert config.max_drawdown_pct == 12.5
    assert config.sizing.risk_pct == 4.0
    assert config.max_total_exposure_pct == RiskConfig().max_total_exposure_pct  # a default


def test_the_environment_overrides_single_fields_at_any_depth(tmp_path: Path) -> None:
    path = tmp_path / "risk.toml"
    path.write_text(SAME["risk.toml"], encoding="utf-8")
    config = risk_config_from(
        path,
        {
            "CDB_RISK__MAX_DRAWDOWN_PCT": "20",
            "CDB_RISK__SIZING__RISK_PCT": "2.5",
            "CDB_RISK__KILL_SWITCH": "true",
            "UNRELATED": "x",
        },
    )
    assert config.max_drawdown_pct == 20.0
    assert config.sizing.risk_pct == 2.5
    assert config.sizing.mode == "equity_at_risk"  # the file's, untouched
    assert config.kill_switch is True
    assert risk_config_from(None, {"CDB_RISK__MAX_DRAWDOWN_PCT": "7"}).max_drawdown_pct == 7.0
    assert risk_config_from(None, {}) == RiskConfig()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"CDB_RISK__MAX_DRAWDOWN_PCT": "150"},
            "max_drawdown_pct: Input should be less than or equal to 100 (got 150)",
        ),
        ({"CDB_RISK__SIZING__RISK_PCT": "lots"}, "sizing.risk_pct"),
        ({"CDB_RISK__NO_SUCH_RULE": "1"}, "no_such_rule: Extra inputs are not permitted"),
        ({"CDB_RISK__SIZING__": "1"}, "expected CDB_RISK__FIELD"),
    ],
)
def test_a_bad_override_is_refused_whole_with_the_field_and_the_variable(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "risk.toml"
    path.write_text(SAME["risk.toml"], encoding="utf-8")
    with pytest.raises(RiskConfigError) as caught:
        risk_config_from(path, {"CDB_RISK__MAX_TOTAL_EXPOSURE_PCT": "80", **environ})
    assert message in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "max_drawdown_pct: [1,\n", "is not valid YAML"),
        ("list.yaml", "- 1\n- 2\n", "expected a table of settings"),
        ("bad.toml", "max_drawdown_pct = \n", "is not valid TOML"),
        ("bad.json", "{", "is not valid JSON"),
        ("range.yaml", "sizing:\n  risk_pct: 0\n", "sizing.risk_pct: Input should be greater"),
    ],
)
def test_a_bad_file_gets_one_line_naming_what_is_wrong(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RiskConfigError, match=message):
        load_risk_config(path)


def test_the_command_line_refuses_a_bad_override_before_any_work(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdb",
            "--data-dir",
            str(tmp_path),
            "backtest",
            "--feed",
            "mock",
            "--count",
            "50",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "CDB_RISK__MAX_DRAWDOWN_PCT": "0", "HOME": str(tmp_path)},
    )
    assert done.returncode == 2
    assert "max_drawdown_pct: Input should be greater than 0" in done.stderr
    assert "CDB_RISK__MAX_DRAWDOWN_PCT" in done.stderr
    assert not (tmp_path / "log").exists()  # refused before the run began
