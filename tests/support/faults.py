"""Tools for fault tests: damaging log files, running cdb as a process, finding leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SEGMENT = "00000000000000000000.log"


def segment(log_dir: Path, topic: str, partition: int = 0) -> Path:
    return log_dir / topic / str(partition) / SEGMENT


def flip_digit(path: Path, at: float) -> int:
    """Change one ASCII digit of ``path``, the first at or after ``at`` (a fraction of the
    file) that lies in a record (after a tab); return its byte position."""
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    while not (data[i : i + 1].isdigit() and b"\t" in data[data.rfind(b"\n", 0, i) : i]):
        i += 1
    data[i] = ord("1") if data[i] != ord("1") else ord("2")
    path.write_bytes(bytes(data))
    return i


def batch_positions(path: Path) -> list[int]:
    """The byte position of every batch header in a segment."""
    positions, position = [], 0
    data = path.read_bytes()
    while position < len(data):
        positions.append(position)
        end = data.index(b"\n", position)
        length = int(data[position:end].split(b" ")[5])
        position = end + 1 + length
    return positions


def cdb_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "cdb", *argv]


def run_cdb(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cdb_command(*argv), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def processes_mentioning(text: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def wait_until_gone(text: str, timeout: float) -> list[int]:
    """Wait until no process mentions ``text``; the ones left after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_mentioning(text)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
