"""The one place that wires the system: where the data lives, which log, which store.

Nothing connects at import time; callers ask for what they need when they need it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, make_url
from sqlalchemy.exc import ArgumentError

from projections.store import StoreError, normalise_store_url, open_store, sqlite_url
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


class SettingsError(ValueError):
    """A setting that cannot be used; the message is one line for the user."""


class DataDirError(SettingsError):
    """A data directory that cannot be used."""


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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"{path.resolve()} is not UTF-8 text (byte {exc.start}): fix or remove it"
        ) from None
    for raw in text.splitlines():
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
        _check_kafka_servers(parse_kafka_url(log))  # refuses anything else in one clear line
    store = store_url or os.environ.get(STORE_ENV) or postgres_url_from_environment()
    if store is not None:
        store = _checked_store_url(store.strip())
    return Settings(Path(chosen), single_process=single, log_url=log, store=store)


def _check_kafka_servers(servers: str) -> None:
    """Each ``host:port`` of a bootstrap list has a host and a port number (the Kafka
    client would otherwise fail deep inside, on its first connection)."""
    for server in servers.split(","):
        host, colon, port = server.strip().rpartition(":")
        if not colon or not host.strip("[]"):
            raise LogError(f"kafka://{servers}: {server.strip()!r} is not HOST:PORT")
        if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise LogError(f"kafka://{servers}: the port {port!r} is not a number 1-65535")


def _checked_store_url(url: str) -> str:
    """``url`` normalised (``normalise_store_url``) and parsed once, so that a URL that
    cannot work (a port that is not a number, say) is refused here in one line, with any
    password hidden."""
    port = _STORE_PORT.search(url)
    if port is not None and not (
        port[1].isascii() and port[1].isdigit() and 0 < int(port[1]) < 65536
    ):
        raise StoreError(
            f"not a usable store URL: {_without_password(url)} "
            f"(the port {port[1]!r} is not a number 1-65535)"
        )
    try:
        normalised = normalise_store_url(url)
        make_url(normalised)
    except StoreError:
        raise
    except (ArgumentError, ValueError) as exc:
        raise StoreError(f"not a usable store URL: {_without_password(url)} ({exc})") from None
    return normalised


# The port of a URL's authority: after the host (a name, an address, or [IPv6]).
_STORE_PORT = re.compile(
    r"^[a-z0-9+]+://(?:[^@/?#]*@)?(?:\[[^\]]*\]|[^:/?#@]*):([^/?#@]+)(?=[/?#]|$)"
)


def _without_password(url: str) -> str:
    """``scheme://user:***@host...`` for a URL that may not parse (so make_url cannot
    hide the password)."""
    return re.sub(r"(://[^/@:]*:)[^@]*@", r"\1***@", url)


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


def make_data_dir(config: Settings) -> None:
    """The data directory exists when this returns; a path that cannot be one (a file,
    a place no directory can be made) is refused in one line that says why."""
    path = config.data_dir
    if path.exists() and not path.is_dir():
        raise DataDirError(
            f"the data directory {path} is not a directory (--data-dir or ${DATA_DIR_ENV})"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(
            f"cannot create the data directory {path}: {(exc.strerror or str(exc)).lower()} "
            f"(choose another with --data-dir or ${DATA_DIR_ENV})"
        ) from None


def check_store_place(config: Settings) -> None:
    """A SQLite store named by ``--store`` must be in a directory that exists (it is not
    created: a mistyped path would otherwise grow a new, empty store)."""
    if config.store is None:
        return
    url = make_url(config.store)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    directory = Path(url.database).parent
    if not directory.is_dir():
        raise StoreError(
            f"the read models' directory {directory} does not exist ({config.store}): "
            "create it, or choose another --store"
        )


def open_read_models(config: Settings) -> Engine:
    make_data_dir(config)
    check_store_place(config)
    return open_store(config.store_url)
