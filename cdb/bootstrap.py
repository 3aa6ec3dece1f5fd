"""The one place that wires the system: where the data lives, which log, which store.

Nothing connects at import time; callers ask for what they need when they need it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from projections.store import open_store, sqlite_url
from streams.embedded_log import EmbeddedLog

DATA_DIR_ENV = "CDB_DATA_DIR"
# Set to 1 to publish market data from the engine's own process (one core only).
SINGLE_PROCESS_ENV = "CDB_SINGLE_PROCESS"
DEFAULT_DATA_DIR = "./var"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    single_process: bool = False

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def store_url(self) -> str:
        return sqlite_url(self.data_dir)


def settings(data_dir: str | None = None) -> Settings:
    """``--data-dir`` wins, then ``$CDB_DATA_DIR``, then ``./var``."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    single = os.environ.get(SINGLE_PROCESS_ENV, "").strip().lower() in {"1", "true", "yes"}
    return Settings(Path(chosen), single_process=single)


def open_log(config: Settings) -> EmbeddedLog:
    return EmbeddedLog(config.log_dir)


def open_read_models(config: Settings) -> Engine:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return open_store(config.store_url)
