"""A disk that fills up: a small tmpfs of the command's own, in a private mount namespace.

``unshare --user --map-root-user --mount`` lets the command mount it without privileges
on the host, and the mount disappears with the process: nothing to clean up, nothing left
mounted if the test is killed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def run_on_small_disk(
    mount_point: Path, size: str, argv: Sequence[str], *, cwd: Path, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cdb argv`` with a tmpfs of ``size`` (e.g. ``"512k"``) mounted at
    ``mount_point`` (an empty directory, created here) for the command's lifetime."""
    mount_point.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "cdb", *argv])
    script = (
        f"mount -t tmpfs -o size={shlex.quote(size)} tmpfs {shlex.quote(str(mount_point))} "
        f"&& exec {command}"
    )
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd,
        env=os.environ.copy(),
    )
