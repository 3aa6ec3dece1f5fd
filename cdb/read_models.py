"""What the command line does with the read models themselves, each one function: a run's
status, the digest, a rebuild, a run's report, the schema's upgrade.

A command that only reads (status, digest, report) creates nothing: on a data directory
without read models it reads an empty schema in memory (``cdb.bootstrap``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from cdb import bootstrap
from cdb.common import UsageError
from cdb.report_file import check_report_path, write_report
from projections.digest import projection_digest
from projections.queries import first_run_ids, has_run
from projections.rebuild import rebuild
from projections.report import render_report
from projections.status import NoSuchRun, run_status_with_lag
from projections.store import upgrade


def status(settings: bootstrap.Settings, run_id: str | None) -> dict[str, Any]:
    """The run's standing (the newest unfinished run, else the newest, when ``run_id`` is
    None), with the log's lag behind it when there is a log."""
    engine = bootstrap.read_models_for_reading(settings)
    try:
        log = bootstrap.log_if_any(settings)
        try:
            return run_status_with_lag(engine, log, run_id)
        finally:
            if log is not None:
                log.close()
    except NoSuchRun as exc:
        raise UsageError(
            f"{exc} ({settings.store_location}): `cdb backtest` or `cdb paper` makes one"
        ) from None
    finally:
        engine.dispose()


def digest(settings: bootstrap.Settings, run_id: str | None) -> str:
    """The digest of the read models as they are (of one run's rows, with ``run_id``)."""
    engine = bootstrap.read_models_for_reading(settings)
    try:
        if run_id is not None:
            _check_run_in_read_models(engine, run_id, settings.store_location)
        return projection_digest(engine, run_id)
    finally:
        engine.dispose()


def rebuild_read_models(settings: bootstrap.Settings, projection: str | None) -> int:
    """Refold the read models (or one table) from offset zero; the events folded."""
    log = bootstrap.open_existing_log(settings)  # first: without a log nothing is created
    try:
        engine = bootstrap.open_read_models(settings)
        try:
            return rebuild(log, engine, projection).events
        finally:
            engine.dispose()
    finally:
        log.close()


def _check_run_in_read_models(engine: Engine, run_id: str, where: str) -> None:
    """A run is in the read models when the ``runs`` table has its row: a digest of any
    other id would be the digest of nothing."""
    if has_run(engine, run_id):
        return
    some = first_run_ids(engine, 6)
    listed = ", ".join(some[:5]) + (" and more" if len(some) > 5 else "")
    raise UsageError(
        f"no run {run_id!r} in the read models at {where}; "
        + (f"they hold {listed}" if some else "they hold no run yet")
        + " (`cdb status --run-id ID` shows one; a run still only in the log gets there "
        "with `cdb project --once`)"
    )


def report(settings: bootstrap.Settings, run_id: str, out: Path) -> None:
    """Write the run's HTML report to ``out``."""
    check_report_path(out)
    engine = bootstrap.read_models_for_reading(settings)
    try:
        text = render_report(engine, run_id)
    except LookupError as exc:
        raise UsageError(str(exc.args[0])) from None
    finally:
        engine.dispose()
    write_report(out, text)


def upgrade_schema(settings: bootstrap.Settings) -> str | None:
    """Apply the schema migrations to the store; the revision it is at now."""
    engine = bootstrap.store_for_upgrade(settings)
    try:
        return upgrade(engine)  # a store that cannot be reached: one line, from main
    finally:
        engine.dispose()
