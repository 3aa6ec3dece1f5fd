"""The lock files beside a SQLite store (migrations, rebuilds) are there only while held:
commands leave none behind, and taking turns still holds when a holder removes its file
under a waiter or was killed holding it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from projections.store import connect_store, open_store, rebuild_lock, sqlite_url
from tests.support.processes import ROOT, wait_for


def _waiting_on(path: Path) -> bool:
    """Some descriptor waits for an flock on the file at ``path`` (``/proc/locks`` lists
    the waiters of a lock with ``->``)."""
    inode = os.stat(path).st_ino
    waiter = re.compile(rf"->\s+FLOCK\s+\S+\s+WRITE\s+\S+\s+[0-9a-f]+:[0-9a-f]+:{inode}\s")
    return any(waiter.search(line) for line in Path("/proc/locks").read_text().splitlines())


def test_opening_a_store_leaves_only_the_database(tmp_path: Path) -> None:
    engine = open_store(sqlite_url(tmp_path))
    try:
        with rebuild_lock(engine):
            assert (tmp_path / "projections.sqlite.rebuild.lock").exists()
        open_store(sqlite_url(tmp_path)).dispose()  # a second opener finds the schema there
    finally:
        engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["projections.sqlite"]


def test_a_waiter_whose_lock_file_was_removed_queues_again(tmp_path: Path) -> None:
    engine = connect_store(sqlite_url(tmp_path))
    lock_file = tmp_path / "projections.sqlite.rebuild.lock"
    second_in, second_may_leave, third_in = threading.Event(), threading.Event(), threading.Event()

    def second() -> None:
        with rebuild_lock(engine):
            second_in.set()
            second_may_leave.wait(30)

    def third() -> None:
        with rebuild_lock(engine):
            third_in.set()

    threads = [threading.Thread(target=second), threading.Thread(target=third)]
    try:
        with rebuild_lock(engine):
            threads[0].start()
            wait_for(lambda: _waiting_on(lock_file), "the second to wait on the first's file")
        # The first removed its file and let go: the second holds the lock of a file that
        # is gone. A third, arriving now, must still wait for the second.
        assert second_in.wait(10)
        threads[1].start()
        assert not third_in.wait(1.0), "two held the lock at once"
        second_may_leave.set()
        assert third_in.wait(10)
    finally:
        second_may_leave.set()
        for thread in threads:
            if thread.ident is not None:  # started
                thread.join(30)
        engine.dispose()
    assert not lock_file.exists()


def test_a_lock_file_left_by_a_killed_holder_is_taken_over_and_removed(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    open_store(url).dispose()
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from projections.store import connect_store, rebuild_lock\n"
            "with rebuild_lock(connect_store(sys.argv[1])):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n",
            url,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
    lock_file = tmp_path / "projections.sqlite.rebuild.lock"
    assert lock_file.exists()  # what a killed holder leaves

    engine = connect_store(url)
    try:
        started = time.monotonic()
        with rebuild_lock(engine):
            assert time.monotonic() - started < 5  # the kernel let go of the killed one's lock
        assert not lock_file.exists()
    finally:
        engine.dispose()
