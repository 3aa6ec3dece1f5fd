"""Where settings come from: options, then the environment, then .env (R14, R18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdb import bootstrap

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
