"""Publishing candles to ``market_data`` from a second process.

Encoding and writing a million candle events is about half the work of a backtest, and
nothing in it feeds back into a decision. So the engine hands each batch of candles (the
very values it processes) to a child process that encodes them with the same codec and
appends them to the log, on the other core. The output is byte-for-byte what the
in-process path writes; only the wall time differs.

Guarantees: batches are appended in the order they were handed over; backpressure comes
from the pipe (the engine waits when the child falls behind, memory stays flat); the child
commits (fsync) before it reports its digest; any failure in the child surfaces in the
engine as a ``LogError`` with the child's message.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import pickle
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from domain.events import Candle, Event
from streams import topics
from streams.codec import encode, encode_candle_fields
from streams.digest import TopicDigest
from streams.embedded_log import EmbeddedLog, LogError


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


# Called with (run id, partition, first offset, first sequence, candle columns) after each
# batch of candles is appended: where their read-model rows can be made from plain values.
MarketDataSink = Callable[[str, int, int, int, tuple[tuple[Any, ...], ...]], None]


class MarketDataPublisher:
    def __init__(self, log_root: Path, run_id: str, sink: MarketDataSink | None = None) -> None:
        context = multiprocessing.get_context("fork")
        self._conn, child_end = context.Pipe(duplex=True)
        self._process = context.Process(
            target=_serve,
            args=(log_root, run_id, child_end, sink),
            daemon=True,
            name="cdb-market-data",
        )
        self._process.start()
        child_end.close()

    def publish(self, candles: list[Candle]) -> None:
        try:
            # Columns of plain values pickle in C; named tuples would cost a Python call each.
            columns = tuple(zip(*candles, strict=True))
            self._conn.send_bytes(pickle.dumps(columns, protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise LogError(self._failure("the market data publisher stopped")) from None

    def finish(self, trailer: list[Event]) -> TopicDigest:
        """Append ``trailer`` after the candles, wait until all is durable, return the digest."""
        try:
            self._conn.send_bytes(b"T" + pickle.dumps([(e.timestamp, encode(e)) for e in trailer]))
            self._conn.send_bytes(b"")
            reply: Any = self._conn.recv()
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise LogError(self._failure("the market data publisher stopped")) from None
        finally:
            self._process.join(timeout=30)
            self._conn.close()
        if reply[0] != "ok":
            raise LogError(f"writing market_data failed: {reply[1]}")
        digest = TopicDigest()
        digest.count, digest.finished = reply[1], reply[2]
        return digest

    def abort(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=5)
        self._conn.close()

    def _failure(self, what: str) -> str:
        try:
            if self._conn.poll(1):
                reply = self._conn.recv()
                if reply[0] == "error":
                    return f"writing market_data failed: {reply[1]}"
        except (EOFError, OSError):
            pass
        self._process.join(timeout=5)
        return f"{what} (exit code {self._process.exitcode})"


def _serve(log_root: Path, run_id: str, conn: Connection, sink: MarketDataSink | None) -> None:
    gc.disable()  # acyclic, short-lived objects only; see streams.backtest
    log = EmbeddedLog(log_root, lock=False)
    digest = TopicDigest()
    sequence = 0
    try:
        while True:
            data = conn.recv_bytes()
            if not data:
                break
            if data[:1] == b"T":  # events that close the topic, already encoded
                trailer: list[tuple[int, bytes]] = pickle.loads(data[1:])
                log.append(topics.MARKET_DATA, run_id, trailer)
                digest.update([value for _, value in trailer])
                continue
            columns = pickle.loads(data)
            if not columns:
                continue
            symbols, stamps, opens, highs, lows, closes, volumes, intervals, _ = columns
            records = [
                (ts, encode_candle_fields(run_id, sequence + i, symbol, ts, o, h, lo, c, v, iv))
                for i, (symbol, ts, o, h, lo, c, v, iv) in enumerate(
                    zip(
                        symbols, stamps, opens, highs, lows, closes, volumes, intervals, strict=True
                    )
                )
            ]
            partition, first_offset = log.append(topics.MARKET_DATA, run_id, records)
            if sink is not None:
                sink(run_id, partition, first_offset, sequence, columns)
            sequence += len(records)
            digest.update([value for _, value in records])
        log.commit()
        log.close()
        conn.send(("ok", digest.count, digest.hexdigest()))
    except BaseException as exc:  # report everything to the engine, then stop
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()
