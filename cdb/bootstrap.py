"""The one place that wires the system: where the data lives, which log, which store.

Nothing connects at import time; callers ask for what they need when they need it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, make_url

from projections.store import normalise_store_url, open_store, sqlite_url
from streams.embedded_log import EmbeddedLog
from streams.kafka_log import KafkaLog, parse_kafka_url
from streams.log_port import EventLog, LogError
from streams.snapshots import SnapshotStore

DATA_DIR_ENV = "CDB_DATA_DIR"
# Where the log lives: "embedded" (under the data directory) or kafka://HOST:PORT.
LOG_ENV = "CDB_LOG"
# Where the read models live: sqlite:///FILE (default: projections.sqlite in the data
# directory) or postgresql://USER:PASSWORD@HOST:PORT/claire_de_binare.
STORE_ENV = "CDB_STORE_URL"
# Partitions of each topic the application creates on Kafka (default 1): one run's events
# stay in one partition, so more partitions serve more runs in parallel.
PARTITIONS_ENV = "CDB_KAFKA_PARTITIONS"
# Set to 1 to publish market data from the engine's own process (one core only).
SINGLE_PROCESS_ENV = "CDB_SINGLE_PROCESS"
DEFAULT_DATA_DIR = "./var"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    single_process: bool = False
    log_url: str = "embedded"
    store: str | None = None

    @property
    def on_kafka(self) -> bool:
        return self.log_url.startswith("kafka://")

    @property
    def log_location(self) -> str:
        return self.log_url if self.on_kafka else str(self.log_dir)

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def store_url(self) -> str:
        return self.store or sqlite_url(self.data_dir)

    @property
    def store_location(self) -> str:
        if self.store is None:
            return str(self.data_dir / "projections.sqlite")
        return make_url(self.store).render_as_string(hide_password=True)


def load_dotenv(path: Path = Path(".env")) -> None:
    """Read ``KEY=VALUE`` lines of ``.env`` (R18) into the environment; the environment wins.

    Blank lines and ``#`` comments are skipped; values may be quoted. Nothing is logged:
    the file holds secrets.
    """
    if not path.is_file():
        return
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        os.environ.setdefault(key, value)


def postgres_url_from_environment() -> str | None:
    """The seed's POSTGRES_* settings (R14) as a store URL, when POSTGRES_HOST is given."""
    host = os.environ.get("POSTGRES_HOST")
    if not host:
        return None
    user = quote(os.environ.get("POSTGRES_USER", "claire"), safe="")
    password = quote(os.environ.get("POSTGRES_PASSWORD", ""), safe="")
    port = os.environ.get("POSTGRES_PORT", "5432")
    database = os.environ.get("POSTGRES_DB", "claire_de_binare")
    credentials = f"{user}:{password}" if password else user
    return f"postgresql://{credentials}@{host}:{port}/{database}"


def settings(
    data_dir: str | None = None, log_url: str | None = None, store_url: str | None = None
) -> Settings:
    """Options win, then the environment, then ``.env``, then the defaults (./var, the
    embedded log, SQLite in the data directory)."""
    load_dotenv()
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    single = os.environ.get(SINGLE_PROCESS_ENV, "").strip().lower() in {"1", "true", "yes"}
    log = (log_url or os.environ.get(LOG_ENV) or "embedded").strip()
    if log != "embedded":
        parse_kafka_url(log)  # refuses anything else with one clear line
    store = store_url or os.environ.get(STORE_ENV) or postgres_url_from_environment()
    if store is not None:
        store = normalise_store_url(store.strip())  # refuses anything else in one line
    return Settings(Path(chosen), single_process=single, log_url=log, store=store)


def open_log(config: Settings) -> EventLog:
    if config.on_kafka:
        raw = os.environ.get(PARTITIONS_ENV, "1").strip()
        if not raw.isdigit() or int(raw) < 1:
            raise LogError(f"${PARTITIONS_ENV} must be a positive whole number, not {raw!r}")
        return KafkaLog(parse_kafka_url(config.log_url), default_partitions=int(raw))
    return EmbeddedLog(config.log_dir)


def snapshot_store(config: Settings) -> SnapshotStore:
    """Where the engine's snapshots are kept: beside the log, in the data directory."""
    return SnapshotStore(config.data_dir / "snapshots")


def log_exists(config: Settings) -> bool:
    return config.on_kafka or config.log_dir.exists()


def open_read_models(config: Settings) -> Engine:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return open_store(config.store_url)
