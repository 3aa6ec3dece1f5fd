"""Where settings come from: options, then the environment, then .env (R14, R18)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cdb import bootstrap
from projections.store import StoreError
from streams.log_port import LogError

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
