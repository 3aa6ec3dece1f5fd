"""A RiskConfig from TOML, YAML or JSON plus environment overrides, validated as a whole."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import orjson
import pytest

from cdb.cli import main
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


# -- strict types, duplicate keys, unreadable files (issue 14) ----------------------------------

STRICT = {
    "toml": {
        "max_drawdown_pct = true\n": "max_drawdown_pct: Input should be a valid number (got True)",
        'kill_switch = "yes"\n': "kill_switch: Input should be a valid boolean (got 'yes')",
        "kill_switch = 1\n": "kill_switch: Input should be a valid boolean (got 1)",
        'max_drawdown_pct = "20"\n': "max_drawdown_pct: Input should be a valid number",
        "max_open_positions = 3.0\n": "max_open_positions: Input should be a valid integer",
        "[sizing]\nrisk_pct = false\n": "sizing.risk_pct: Input should be a valid number",
        "[intensity]\nenabled = 'yes'\n": "intensity.enabled: Input should be a valid boolean",
    },
    "yaml": {
        "max_drawdown_pct: true\n": "max_drawdown_pct: Input should be a valid number (got True)",
        "kill_switch: yes\n": "kill_switch: Input should be a valid boolean (got 'yes')",
        "kill_switch: off\n": "kill_switch: Input should be a valid boolean (got 'off')",
        "max_drawdown_pct: 1_0\n": "max_drawdown_pct: Input should be a valid number (got '1_0')",
        "kill_switch: 'true'\n": "kill_switch: Input should be a valid boolean (got 'true')",
        "cooldown:\n  after_loss_minutes: 1.5\n": "cooldown.after_loss_minutes: Input should",
    },
    "json": {
        '{"max_drawdown_pct": true}': "max_drawdown_pct: Input should be a valid number",
        '{"kill_switch": "yes"}': "kill_switch: Input should be a valid boolean (got 'yes')",
        '{"kill_switch": 0}': "kill_switch: Input should be a valid boolean (got 0)",
    },
}


@pytest.mark.parametrize(
    ("suffix", "text"), [(suffix, text) for suffix, cases in STRICT.items() for text in cases]
)
def test_types_are_strict_in_every_format(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"risk.{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RiskConfigError) as caught:
        load_risk_config(path)
    assert STRICT[suffix][text] in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "text", "key"),
    [
        (
            "top.toml",
            "max_drawdown_pct = 10\nmax_drawdown_pct = 20\n",
            "'max_drawdown_pct' (line 2)",
        ),
        ("table.toml", "[sizing]\nrisk_pct = 1\nrisk_pct = 2\n", "'sizing.risk_pct' (line 3)"),
        (
            "top.yaml",
            "max_drawdown_pct: 10\nkill_switch: false\nmax_drawdown_pct: 20\n",
            "'max_drawdown_pct' (line 3)",
        ),
        ("nested.yaml", "sizing:\n  risk_pct: 1\n  risk_pct: 2\n", "'risk_pct' (line 3)"),
        ("quoted.yaml", "kill_switch: false\n'kill_switch': true\n", "'kill_switch' (line 2)"),
        ("top.json", '{"kill_switch": false, "kill_switch": true}', "'kill_switch'"),
        ("nested.json", '{"sizing": {"risk_pct": 1, "risk_pct": 2}}', "'risk_pct'"),
    ],
)
def test_a_key_given_twice_is_refused_in_every_format(
    tmp_path: Path, name: str, text: str, key: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RiskConfigError, match="duplicate key") as caught:
        load_risk_config(path)
    assert f"duplicate key {key}" in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


def test_yaml_scalars_are_typed_as_in_yaml_1_2(tmp_path: Path) -> None:
    path = tmp_path / "risk.yaml"
    path.write_text("kill_switch: true\nmax_order_quantity: 1e2\nmin_order_quantity: .5\n")
    config = load_risk_config(path)
    assert (config.kill_switch, config.max_order_quantity, config.min_order_quantity) == (
        True,
        100.0,
        0.5,
    )


def test_a_yaml_merge_key_is_not_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "risk.yaml"
    path.write_text(
        "sizing: &s {mode: equity_at_risk, risk_pct: 4}\n"
        "cooldown: {after_loss_minutes: 5}\n"
        "intensity:\n  <<: {enabled: false, window_trades: 30}\n  window_trades: 40\n",
        encoding="utf-8",
    )
    config = load_risk_config(path)
    assert config.intensity is not None and config.intensity.window_trades == 40


@pytest.mark.parametrize(
    ("environ", "outcome"),
    [
        ({"CDB_RISK__KILL_SWITCH": "yes"}, "kill_switch: Input should be a valid boolean"),
        ({"CDB_RISK__KILL_SWITCH": "1"}, "kill_switch: Input should be a valid boolean"),
        ({"CDB_RISK__KILL_SWITCH": "true"}, True),
        ({"CDB_RISK__MAX_DRAWDOWN_PCT": "20"}, 20.0),
        (
            {"CDB_RISK__MAX_DRAWDOWN_PCT": "true"},
            "max_drawdown_pct: Input should be a valid number",
        ),
        ({"CDB_RISK__SIZING": '{"risk_pct": 1, "risk_pct": 2}'}, "duplicate key 'risk_pct'"),
        ({"CDB_RISK__MAX_DRAWDOWN_PCT": "[" * 50_000}, "nested too deeply"),
    ],
)
def test_overrides_are_as_strict_as_files(environ: dict[str, str], outcome: object) -> None:
    if isinstance(outcome, str):
        with pytest.raises(RiskConfigError) as caught:
            risk_config_from(None, environ)
        assert outcome in str(caught.value)
        assert next(iter(environ)) in str(caught.value)  # the variable is named
        return
    config = risk_config_from(None, environ)
    value = config.kill_switch if "KILL_SWITCH" in next(iter(environ)) else config.max_drawdown_pct
    assert value == outcome


def test_a_valid_configuration_reads_and_dumps_exactly_as_before(tmp_path: Path) -> None:
    """The dump names the run: strict reading must not change a valid configuration's."""
    example = ROOT / "docs" / "examples" / "risk.toml"
    lax = RiskConfig.model_validate(tomllib.loads(example.read_text(encoding="utf-8")))
    strict = load_risk_config(example)
    assert strict.model_dump() == lax.model_dump()
    assert orjson.dumps(strict.model_dump()) == orjson.dumps(lax.model_dump())
    # What a log holds of it (JSON numbers and booleans) reads strictly as the same.
    logged = tmp_path / "logged.json"
    logged.write_bytes(orjson.dumps(strict.model_dump()))
    assert load_risk_config(logged) == strict


def test_a_risk_config_that_is_not_utf8_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "risk.toml"
    path.write_bytes(b"kill_switch = false\nmax_drawdown_pct = 20 # \xe9t\xe9\n")
    mock = ["--feed", "mock", "--count", "50"]
    code = main(
        ["--data-dir", str(tmp_path / "var"), "backtest", *mock, "--risk-config", str(path)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"cdb: error: risk config {path} is not a UTF-8 text file (line 2)\n"
    assert not (tmp_path / "var" / "log").exists()


def test_a_risk_config_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "risk.toml"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        # In a process of its own: reading either used to block or never end.
        argv = ["backtest", "--feed", "mock", "--count", "50", "--risk-config", str(path)]
        done = subprocess.run(
            [sys.executable, "-m", "cdb", "--data-dir", str(tmp_path / "var"), *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert done.stderr == f"cdb: error: cannot read risk config {path}: not a regular file\n"


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_a_number_of_thousands_of_digits_is_one_line(tmp_path: Path, suffix: str) -> None:
    """Python's int() refuses more than 4,300 digits with a ValueError that once escaped the
    loader (found by tests/property/test_fuzz_risk_config.py)."""
    huge = "1" + "0" * 5_000
    path = tmp_path / f"risk{suffix}"
    text = {".toml": "max_drawdown_pct = {}\n", ".yaml": "max_drawdown_pct: {}\n"}
    path.write_text(text.get(suffix, '{{"max_drawdown_pct": {}}}').format(huge), encoding="utf-8")
    with pytest.raises(RiskConfigError, match="a number with too many digits"):
        load_risk_config(path)
    with pytest.raises(RiskConfigError, match="max_drawdown_pct: Input should be a valid number"):
        risk_config_from(None, {"CDB_RISK__MAX_DRAWDOWN_PCT": huge})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kill_switch: "\\U00110000"\n', "chr() arg not in range"),
        ('kill_switch: "\\U' + "9" * 30 + '"\n', "Python int too large"),
        ('max_drawdown_pct: !!int "0x"\n', "invalid literal for int()"),
        ('max_drawdown_pct: !!timestamp "2001-13-45"\n', "month must be in 1..12"),
        ('max_drawdown_pct: !!int "' + "1" * 5_000 + '"\n', "a number with too many digits"),
    ],
)
def test_a_yaml_value_that_names_nothing_is_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    """PyYAML converts escapes and tagged values as it reads them; a ValueError or an
    OverflowError from there once escaped the loader (found by the longer fuzzing run)."""
    path = tmp_path / "risk.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RiskConfigError, match="is not valid YAML") as caught:
        load_risk_config(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
