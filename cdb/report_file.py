"""The HTML report's file: checked before any work, written in one line or refused in one."""

from __future__ import annotations

from pathlib import Path

from cdb.common import UsageError


def check_report_path(path: Path) -> None:
    """Refuse, before any work, a report path that cannot be a file; make its directory."""
    if path.is_dir():
        raise UsageError(f"cannot write report {path}: it is a directory; give a file name")
    try:
        path.resolve().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write report {path}: {exc.strerror or exc}") from None


def write_report(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write report {path}: {exc.strerror or exc}") from None
