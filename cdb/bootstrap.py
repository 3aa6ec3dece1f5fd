"""The one place that wires the system: the settings, where the data lives, which log,
which store, and everything that depends on which log it is.

Guarantees:

1. Every setting is read here, once per command: the ``CDB_*``, ``POSTGRES_*`` and
   ``REDIS_*`` variables of the process's environment over those of ``.env``
   (``read_environment``), into one ``Settings`` value the commands are handed. No other
   module of ``cdb/`` reads the environment, and ``.env`` is never written back into it.
2. Nothing connects at import time; callers ask for what they need when they need it.
3. Only this module looks at which concrete log there is: a command asks for what it
   needs (a market-data sink or None, a snapshot store or None, the embedded log for
   ``paper``) and gets it, or one line saying why that transport cannot give it.
4. A command that only reads creates nothing: ``read_models_for_reading`` opens no file
   and no directory that is not there already.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import quote, unquote, urlsplit

from sqlalchemy import Engine, make_url
from sqlalchemy.exc import ArgumentError

from projections.candle_sink import CandleSink
from projections.projector import projector_name
from projections.risk_cache import redis_url_from_environment
from projections.store import (
    StoreError,
    connect_store,
    normalise_store_url,
    open_store,
    sqlite_url,
)
from streams.embedded_log import EmbeddedLog
from streams.kafka_log import KafkaLog, parse_kafka_url
from streams.log_port import EventLog, LogError
from streams.snapshots import SNAPSHOT_EVERY, SnapshotStore

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
# Candles between two engine snapshots (backtests and the worker).
SNAPSHOT_EVERY_ENV = "CDB_SNAPSHOT_EVERY"
# Set to 1 to print the traceback before an error's one line.
VERBOSE_ENV = "CDB_VERBOSE"
# Single fields of the risk configuration: CDB_RISK__MAX_DRAWDOWN_PCT=20 (docs/risk.md).
RISK_OVERRIDE_PREFIX = "CDB_RISK__"
REDIS_PASSWORD_ENV = "REDIS_PASSWORD"
DEFAULT_DATA_DIR = "./var"
# The variables that are settings; nothing else of the environment is read.
SETTING_PREFIXES = ("CDB_", "POSTGRES_", "REDIS_")
_YES = frozenset({"1", "true", "yes"})


class SettingsError(ValueError):
    """A setting that cannot be used; the message is one line for the user."""


class DataDirError(SettingsError):
    """A data directory that cannot be used."""


class TransportError(SettingsError):
    """A command asked of a log it does not run on (``cdb paper`` on Kafka, say)."""


class NoLogError(LogError):
    """A command that reads the log, on a data directory that has none."""


# -- the environment, read once ---------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """The setting variables (``SETTING_PREFIXES``) as one command sees them: the process's
    environment over ``.env``. ``problem`` is why ``.env`` could not be read (then only
    the process's environment is here, and ``settings`` raises it)."""

    variables: Mapping[str, str] = field(default_factory=dict)
    problem: Exception | None = None

    def get(self, name: str, default: str = "") -> str:
        return self.variables.get(name, default)

    def flag(self, name: str) -> bool:
        return self.get(name).strip().lower() in _YES

    def with_prefix(self, prefix: str) -> Mapping[str, str]:
        return MappingProxyType({k: v for k, v in self.variables.items() if k.startswith(prefix)})


def read_environment(
    environ: Mapping[str, str] | None = None, dotenv: Path = Path(".env")
) -> Environment:
    """The settings' variables of ``environ`` (the process's by default) over the
    ``KEY=VALUE`` lines of ``dotenv`` (R18). Blank lines and ``#`` comments are skipped;
    values may be quoted. Nothing is logged: the file holds secrets."""
    process = os.environ if environ is None else environ
    chosen = {k: v for k, v in process.items() if k.startswith(SETTING_PREFIXES)}
    try:
        from_file = _dotenv_variables(dotenv)
    except (SettingsError, OSError) as exc:
        return Environment(MappingProxyType(chosen), exc)
    merged = {**from_file, **chosen}  # the environment wins
    return Environment(MappingProxyType(merged))


def _dotenv_variables(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"{path.resolve()} is not UTF-8 text (byte {exc.start}): fix or remove it"
        ) from None
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if key.startswith(SETTING_PREFIXES):
            found.setdefault(key, value)  # the first line of a key wins, as before
    return found


# -- the settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything a command may be configured by, read once. Options win, then the
    environment, then ``.env``, then the defaults.

    ``snapshot_every`` and ``kafka_partitions`` are checked where they are used, so a
    value that is wrong for one command does not stop another that never uses it."""

    data_dir: Path
    single_process: bool = False
    log_url: str = "embedded"
    store: str | None = None
    verbose: bool = False
    snapshot_every_text: str = ""
    kafka_partitions_text: str = "1"
    risk_overrides: Mapping[str, str] = field(default_factory=dict, hash=False)
    redis: Mapping[str, str] = field(default_factory=dict, hash=False)

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

    @property
    def snapshot_every(self) -> int:
        """Candles between two engine snapshots: ``$CDB_SNAPSHOT_EVERY``, or the default."""
        raw = self.snapshot_every_text.strip()
        if not raw:
            return SNAPSHOT_EVERY
        if not raw.isdigit() or int(raw) < 1:
            raise SettingsError(
                f"${SNAPSHOT_EVERY_ENV} must be a positive whole number, not {raw!r}"
            )
        return int(raw)

    @property
    def kafka_partitions(self) -> int:
        raw = self.kafka_partitions_text.strip()
        if not raw.isdigit() or int(raw) < 1:
            raise LogError(f"${PARTITIONS_ENV} must be a positive whole number, not {raw!r}")
        return int(raw)


def postgres_url_from_environment(environment: Environment) -> str | None:
    """The seed's POSTGRES_* settings (R14) as a store URL, when POSTGRES_HOST is given."""
    host = environment.get("POSTGRES_HOST")
    if not host:
        return None
    user = quote(environment.get("POSTGRES_USER", "claire"), safe="")
    password = quote(environment.get("POSTGRES_PASSWORD", ""), safe="")
    port = environment.get("POSTGRES_PORT", "5432")
    database = environment.get("POSTGRES_DB", "claire_de_binare")
    credentials = f"{user}:{password}" if password else user
    return f"postgresql://{credentials}@{host}:{port}/{database}"


def settings(
    data_dir: str | None = None,
    log_url: str | None = None,
    store_url: str | None = None,
    environment: Environment | None = None,
) -> Settings:
    """The settings, from the options given, then ``environment`` (read now if None),
    then the defaults (./var, the embedded log, SQLite in the data directory). A value
    that cannot work is refused here, in one line."""
    env = read_environment() if environment is None else environment
    if env.problem is not None:
        raise env.problem
    chosen = data_dir or env.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    log = (log_url or env.get(LOG_ENV) or "embedded").strip()
    if log != "embedded":
        _check_kafka_servers(parse_kafka_url(log))  # refuses anything else in one clear line
    store = store_url or env.get(STORE_ENV) or postgres_url_from_environment(env)
    if store is not None:
        store = _checked_store_url(store.strip())
    return Settings(
        Path(chosen),
        single_process=env.flag(SINGLE_PROCESS_ENV),
        log_url=log,
        store=store,
        verbose=env.flag(VERBOSE_ENV),
        snapshot_every_text=env.get(SNAPSHOT_EVERY_ENV),
        kafka_partitions_text=env.get(PARTITIONS_ENV, "1"),
        risk_overrides=env.with_prefix(RISK_OVERRIDE_PREFIX),
        redis=env.with_prefix("REDIS_"),
    )


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


# -- the log ----------------------------------------------------------------------------------

# Commands that run on one transport only, and what to do on the other.
_EMBEDDED_ONLY = {
    "paper": "cdb paper runs on the embedded log; on Kafka run `cdb feed`, `cdb worker` and "
    "`cdb project`, each its own process",
}
_KAFKA_ONLY = {
    "feed": "cdb feed publishes for `cdb worker` on Kafka (--log kafka://HOST:PORT); on the "
    "embedded log, `cdb paper --feed ...` runs the feed and the engine in one process",
    "worker": "cdb worker runs on Kafka: give --log kafka://HOST:PORT (or $CDB_LOG)",
    "agent": "cdb agent runs on Kafka: give --log kafka://HOST:PORT (or $CDB_LOG)",
}


def require_transport(config: Settings, command: str) -> None:
    """Refuse, in one line and before any work, a command the configured log cannot run."""
    if config.on_kafka and command in _EMBEDDED_ONLY:
        raise TransportError(_EMBEDDED_ONLY[command])
    if not config.on_kafka and command in _KAFKA_ONLY:
        raise TransportError(_KAFKA_ONLY[command])


def open_log(config: Settings) -> EventLog:
    if config.on_kafka:
        return KafkaLog(parse_kafka_url(config.log_url), default_partitions=config.kafka_partitions)
    return EmbeddedLog(config.log_dir)


def log_exists(config: Settings) -> bool:
    return config.on_kafka or config.log_dir.exists()


def open_existing_log(config: Settings) -> EventLog:
    """The log, for a command that reads it; ``NoLogError`` (and nothing created) if the
    data directory has none."""
    if not log_exists(config):
        raise NoLogError(f"no log at {config.log_dir}: run a backtest first")
    return open_log(config)


def log_if_any(config: Settings) -> EventLog | None:
    """The log if there is one (a broker, or a log directory), else None."""
    return open_log(config) if log_exists(config) else None


def paper_log(config: Settings) -> EmbeddedLog:
    """The embedded log, open for writing, for a paper run in this process (its
    directory made); ``TransportError`` on Kafka."""
    require_transport(config, "paper")
    make_data_dir(config)
    log = EmbeddedLog(config.log_dir)
    log.open_for_writing()
    return log


def feed_log(config: Settings) -> EventLog:
    """The broker's log for ``cdb feed``, checked to answer (one line if it does not)."""
    require_transport(config, "feed")
    log = open_log(config)
    try:
        log.topic_names()  # fail fast, in one line, if the broker is not there
    except Exception:
        log.close()
        raise
    return log


def worker_broker(config: Settings, command: str = "worker") -> str:
    """The broker's address for ``cdb worker`` (or ``cdb agent``), checked to answer."""
    require_transport(config, command)
    address = parse_kafka_url(config.log_url)
    with KafkaLog(address) as kafka:  # fail fast, in one line, if the broker is not there
        kafka.topic_names()
    return address


def embedded_log_dir(config: Settings, command: str) -> Path:
    """The embedded log's directory, for a command that checks its files (``log verify``,
    ``log repair``); ``TransportError`` on Kafka."""
    if config.on_kafka:
        raise TransportError(
            f"`cdb {command}` checks the embedded log's files; on Kafka the broker keeps "
            "the log (use its own tools)"
        )
    return config.log_dir


def agent_dir(config: Settings, stage: str) -> Path:
    """Where a stage agent's faust app keeps its own files: in the data directory."""
    return config.data_dir / "agents" / stage


def snapshot_store(config: Settings) -> SnapshotStore:
    """Where the engine's snapshots are kept: beside the log, in the data directory."""
    return SnapshotStore(config.data_dir / "snapshots")


def backtest_snapshots(config: Settings) -> SnapshotStore | None:
    """Where a backtest keeps engine snapshots: in the data directory beside an embedded
    log; none for a backtest through a broker (the worker keeps its own)."""
    return None if config.on_kafka else snapshot_store(config)


def market_data_sink(config: Settings, log: EventLog) -> CandleSink | None:
    """On the embedded log a backtest folds its candle rows into the read models as it
    writes them (the schema must be there first); through a broker the projector does."""
    if config.on_kafka:
        return None
    return CandleSink(config.store_url, projector_name(log))


# -- the read models --------------------------------------------------------------------------


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
    """The read models, their schema made or brought up to date (the data directory and
    a SQLite file are created if they are not there)."""
    make_data_dir(config)
    check_store_place(config)
    return open_store(config.store_url)


def check_data_dir(config: Settings) -> None:
    """Refuse, as ``make_data_dir`` does, a data directory that cannot be one, and leave
    none behind: a path that is not there yet is made and at once removed again (the only
    sure way to know that it can be made)."""
    path = config.data_dir
    if path.is_dir():
        return
    missing = []  # the levels of the path that are not there, deepest first
    level = path
    while not level.exists() and not level.is_symlink() and level != level.parent:
        missing.append(level)
        level = level.parent
    try:
        make_data_dir(config)
    finally:
        for made in missing:
            try:
                made.rmdir()
            except OSError:
                break  # not made here, or something is in it now: not ours to remove


def read_models_for_reading(config: Settings) -> Engine:
    """The read models for a command that only reads them. A SQLite file that is not
    there is not created, nor the data directory: the reads go to an empty schema in
    memory instead, which answers exactly as a fresh file would (no run, the digest of
    nothing)."""
    check_data_dir(config)
    check_store_place(config)
    file = _sqlite_file(config)
    if file is not None and not file.exists():
        return open_store("sqlite://")
    return open_store(config.store_url)


def store_for_upgrade(config: Settings) -> Engine:
    """The store's engine, without migrating it, for ``cdb db upgrade`` to migrate."""
    if config.store is None:
        make_data_dir(config)
    check_store_place(config)
    return connect_store(config.store_url)


def _sqlite_file(config: Settings) -> Path | None:
    url = make_url(config.store_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


# -- Redis --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisPlace:
    """Where ``cdb intensity`` finds Redis, and the password to give it ("" for none)."""

    url: str
    password: str


def redis_place(config: Settings, url_option: str | None) -> RedisPlace:
    """``--redis`` or ``redis://$REDIS_HOST:$REDIS_PORT/0``; the URL's own password if it
    has one, else ``$REDIS_PASSWORD`` (an empty one is none)."""
    url = url_option or redis_url_from_environment(config.redis)
    in_url = urlsplit(url).password
    password = unquote(in_url) if in_url else config.redis.get(REDIS_PASSWORD_ENV, "")
    return RedisPlace(url, password)
