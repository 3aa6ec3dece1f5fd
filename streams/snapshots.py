"""Engine snapshots: the pipeline's state between two candles, at a market_data offset.

A snapshot is a cache of the log, never its truth: the state it holds is what folding the
run's candles up to its offset gives, and a replay or a restart may always refold from the
run's first candle instead. It only saves the time.

One file per snapshot, ``<root>/<run id>/<candles, 12 digits>.snap``: a JSON header line
(schema version, run, topic, partition, the offset of the next candle, the candles folded,
the code version, the payload's sha256), then the payload: the engine state as JSON with
its own ``state_version`` (``PaperTradingPipeline.export_state``, see
``domain.pipeline_state``). Files are written to a temporary name and renamed, without
fsync: a snapshot is a cache, and one a crash tore does not match its hash. A snapshot of
another schema version, or whose payload does not match its hash, is passed over; so is
one of other deciding code (``streams.code_identity``), with a warning that says so: its
state is what other rules folded, and restoring it would give that code's events.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from streams import topics

# 2: the payload is the engine state as JSON (1: a pickle; such files are passed over).
SNAPSHOT_SCHEMA = 2
# Candles between two snapshots of a backtest (taken at the first batch boundary after).
SNAPSHOT_EVERY = 50_000

logger = logging.getLogger("cdb.snapshots")


@dataclass(frozen=True)
class Snapshot:
    run_id: str
    partition: int
    offset: int  # the market_data offset of the next candle to fold
    candles: int  # candles folded before it (the next candle's sequence)
    code_version: str  # of the deciding code that took it: only the same code restores it
    payload: bytes


class SnapshotStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._refused: set[Path] = set()  # snapshots of other code already warned about

    def _directory(self, run_id: str) -> Path:
        return self.root / run_id

    def discard(self, run_id: str) -> None:
        """Forget every snapshot of ``run_id``: a run that starts afresh under an id the
        log does not hold finds only the leftovers of an attempt that never committed,
        taken at offsets its candles may not have."""
        directory = self._directory(run_id)
        if directory.is_dir():
            for path in directory.iterdir():
                if path.suffix in (".snap", ".tmp"):
                    path.unlink(missing_ok=True)

    def write(self, snapshot: Snapshot) -> Path:
        directory = self._directory(snapshot.run_id)
        directory.mkdir(parents=True, exist_ok=True)
        header = {
            "schema_version": SNAPSHOT_SCHEMA,
            "run_id": snapshot.run_id,
            "topic": topics.MARKET_DATA,
            "partition": snapshot.partition,
            "offset": snapshot.offset,
            "candles": snapshot.candles,
            "code_version": snapshot.code_version,
            "sha256": hashlib.sha256(snapshot.payload).hexdigest(),
        }
        path = directory / f"{snapshot.candles:012d}.snap"
        tmp = path.with_suffix(".tmp")
        # Not fsynced: a snapshot is a cache, and one a crash tore is caught by its hash.
        tmp.write_bytes(orjson.dumps(header) + b"\n" + snapshot.payload)
        os.replace(tmp, path)
        return path

    def read(self, path: Path) -> Snapshot | None:
        """The snapshot in ``path``, or None if it is not a whole one of this schema."""
        try:
            data = path.read_bytes()
            line, _, payload = data.partition(b"\n")
            header = orjson.loads(line)
            if (
                header.get("schema_version") != SNAPSHOT_SCHEMA
                or header.get("topic") != topics.MARKET_DATA
                or hashlib.sha256(payload).hexdigest() != header.get("sha256")
            ):
                return None
            return Snapshot(
                run_id=str(header["run_id"]),
                partition=int(header["partition"]),
                offset=int(header["offset"]),
                candles=int(header["candles"]),
                code_version=str(header["code_version"]),
                payload=payload,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def nearest(self, run_id: str, candles: int, code_version: str) -> Snapshot | None:
        """The latest usable snapshot of ``run_id`` taken at or before ``candles`` candles
        by ``code_version``. The latest one of other deciding code, if any, is named in a
        warning (once per store and file), with what the caller will do instead."""
        directory = self._directory(run_id)
        if not directory.is_dir():
            return None
        refused: tuple[Path, Snapshot] | None = None
        found = None
        for path in sorted(directory.glob("*.snap"), reverse=True):
            if not path.stem.isdigit() or int(path.stem) > candles:
                continue
            snapshot = self.read(path)
            if snapshot is None:
                continue
            if snapshot.code_version == code_version:
                found = snapshot
                break
            if refused is None:
                refused = (path, snapshot)
        if refused is not None and refused[0] not in self._refused:
            self._refused.add(refused[0])
            other = refused[1]
            logger.warning(
                "snapshot of run %s at candle %d was taken by other deciding code "
                "(%s; this is %s): %s",
                run_id,
                other.candles,
                other.code_version,
                code_version,
                "refolding from the start"
                if found is None
                else f"restoring the one at candle {found.candles}",
            )
        return found
