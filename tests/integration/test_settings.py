"""Where settings come from: options, then the environment, then .env (R14, R18)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cdb import bootstrap
from projections.store import StoreError
from streams.log_port import LogError
from tests.support.candles import write_closes
from tests.support.cli import refused

SEED_VARIABLES = (
    "CDB_DATA_DIR",
    "CDB_LOG",
    "CDB_STORE_URL",
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
)


@pytest.fixture
def project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in SEED_VARIABLES:
        # setenv first, so that whatever .env puts there is removed again after the test.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_without_any_setting(project_root: Path) -> None:
    settings = bootstrap.settings()
    assert settings.data_dir == Path("./var")
    assert settings.log_url == "embedded"
    assert settings.store_url == "sqlite:///var/projections.sqlite"


def test_dotenv_gives_postgres_from_the_seed_variables(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project_root / ".env").write_text(
        "# secrets\nPOSTGRES_HOST=db.internal\nPOSTGRES_USER=claire\n"
        "POSTGRES_PASSWORD='p@ss word'\nPOSTGRES_DB=claire_de_binare\nCDB_DATA_DIR=/srv/cdb\n",
        encoding="utf-8",
    )
    settings = bootstrap.settings()
    assert settings.data_dir == Path("/srv/cdb")
    assert settings.store_url == (
        "postgresql+psycopg://claire:p%40ss%20word@db.internal:5432/claire_de_binare"
    )
    assert "p@ss" not in settings.store_location and "***" in settings.store_location


def test_the_environment_and_options_win_over_dotenv(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project_root / ".env").write_text("CDB_DATA_DIR=/from/dotenv\n", encoding="utf-8")
    monkeypatch.setenv("CDB_DATA_DIR", "/from/environment")
    assert bootstrap.settings().data_dir == Path("/from/environment")
    assert bootstrap.settings(data_dir="/from/option").data_dir == Path("/from/option")


@pytest.mark.parametrize(
    "url", ["kafka://localhost:9092", "kafka://a:1,b:65535", "kafka://[::1]:9092/"]
)
def test_kafka_addresses_with_port_numbers_are_taken(project_root: Path, url: str) -> None:
    assert bootstrap.settings(log_url=url).log_url == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("kafka://localhost:abc", "the port 'abc' is not a number"),
        ("kafka://localhost:0", "the port '0' is not a number 1-65535"),
        ("kafka://localhost:9092,otherhost", "'otherhost' is not HOST:PORT"),
        ("kafka://:9092", "':9092' is not HOST:PORT"),
    ],
)
def test_a_kafka_address_without_a_port_number_is_refused(
    project_root: Path, url: str, says: str
) -> None:
    with pytest.raises(LogError, match=re.escape(says)):
        bootstrap.settings(log_url=url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://claire:s3cret@db:notaport/claire_de_binare", "'notaport'"),
        ("postgresql://claire:s3cret@db:65536/claire_de_binare", "'65536'"),
        ("postgres://claire:s3cret@[::1]:x/claire_de_binare", "'x'"),
    ],
)
def test_a_store_url_whose_port_is_not_a_number_is_refused_without_its_password(
    project_root: Path, url: str, says: str
) -> None:
    with pytest.raises(StoreError) as refused:
        bootstrap.settings(store_url=url)
    assert says in str(refused.value) and "s3cret" not in str(refused.value)
    assert "claire:***@" in str(refused.value)


def test_a_store_url_with_a_port_number_is_taken(project_root: Path) -> None:
    url = "postgresql://claire:s3cret@[::1]:6543/claire_de_binare?connect_timeout=5"
    assert bootstrap.settings(store_url=url).store_url == url.replace(
        "postgresql://", "postgresql+psycopg://"
    )


def test_a_dotenv_that_is_not_utf8_is_refused(project_root: Path) -> None:
    (project_root / ".env").write_bytes(b"POSTGRES_PASSWORD=\xe9t\xe9\n")
    with pytest.raises(bootstrap.SettingsError, match="not UTF-8"):
        bootstrap.settings()


# -- one settings object, read once (issue 15) ----------------------------------------------------


def test_only_setting_variables_are_read_and_dotenv_stays_out_of_the_environment(
    project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project_root / ".env").write_text(
        "CDB_SNAPSHOT_EVERY=7\nREDIS_PASSWORD=from-dotenv\nHOME=/not/a/setting\n"
        "CDB_SNAPSHOT_EVERY=8\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("REDIS_PASSWORD", "from-environment")
    environment = bootstrap.read_environment()
    assert environment.get("CDB_SNAPSHOT_EVERY") == "7"  # the first line of a key wins
    assert environment.get("REDIS_PASSWORD") == "from-environment"  # the environment wins
    assert "HOME" not in environment.variables and "PATH" not in environment.variables
    settings = bootstrap.settings(environment=environment)
    assert settings.snapshot_every == 7
    assert bootstrap.redis_place(settings, None).password == "from-environment"
    # Read into the settings, never written back into the process's environment.
    assert "CDB_SNAPSHOT_EVERY" not in os.environ


def test_a_wrong_snapshot_interval_stops_only_the_commands_that_use_it(
    project_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CDB_SNAPSHOT_EVERY", "often")
    candles = write_closes(project_root / "HAND_USD.csv", [1, 3, 2, 2, 2, 1, 1, 2, 2])
    data_dir = project_root / "v"
    line = refused(
        capsys, "--data-dir", str(data_dir), "backtest", "--data", str(candles), "--no-progress"
    )
    assert line == "$CDB_SNAPSHOT_EVERY must be a positive whole number, not 'often'"
    assert not data_dir.exists()  # refused before any work
    line = refused(capsys, "--data-dir", str(data_dir), "status")
    assert line.startswith("no run in the read models yet"), line


def test_risk_overrides_in_dotenv_apply_to_a_backtest_as_to_every_run(
    project_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("CDB_RISK__")]:
        monkeypatch.delenv(name)
    (project_root / ".env").write_text("CDB_RISK__MAX_DRAWDOWN_PCT=500\n", encoding="utf-8")
    candles = write_closes(project_root / "HAND_USD.csv", [1, 3, 2, 2, 2, 1, 1, 2, 2])
    data_dir = project_root / "v"
    for command in (
        ["backtest", "--data", str(candles), "--no-progress"],
        ["paper", "--feed", "mock", "--count", "3", "--metrics-port", "-1"],
    ):
        line = refused(capsys, "--data-dir", str(data_dir), *command)
        assert "CDB_RISK__MAX_DRAWDOWN_PCT" in line and "max_drawdown_pct" in line, line
    assert not data_dir.exists()
