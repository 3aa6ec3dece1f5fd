"""Publishing candles to ``market_data`` from a second process.

Encoding and writing a million candle events is about half the work of a backtest, and
nothing in it feeds back into a decision. So the engine hands each batch of candles (the
very values it processes) to a child process that encodes them with the same codec and
appends them to the log, on the other core. The output is byte-for-byte what the
in-process path writes; only the wall time differs.

Guarantees: batches are appended in the order they were handed over; backpressure comes
from the pipe (the engine waits when the child falls behind, memory stays flat); the child
syncs (fsync) what it wrote before it reports its digest and where its partitions end, and
the engine's own commit of the log covers them (``EmbeddedLog.adopt``): the candles become
visible with the run's other events, in one commit; any failure in the child surfaces in
the engine as a ``LogError`` with the child's message.

A sink (the candles read model) runs in a third process that the child feeds the same
pickled columns after each append; the child waits for it and hands its report back with
the digest. The sink writes its rows in one open transaction and commits it only when the
engine says the log has committed the candles (``commit_sink``), so the read models never
hold a candle the log does not.

The helpers never outlive the engine (``streams.process_guard``): killed with it, they exit
at once and let go of the log's lock, the store and the terminal.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import pickle
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from domain.events import Candle, Event
from streams import topics
from streams.codec import encode, encode_candle_fields, relabeller
from streams.digest import TopicDigest
from streams.embedded_log import EmbeddedLog, LogError
from streams.log_port import SharedWriting
from streams.process_guard import close_inherited, die_with_parent


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


class MarketDataSink(Protocol):
    """Called with (run id, partition, first offset, first sequence, candle columns) after
    each batch of candles is appended: where their read-model rows can be made from plain
    values. Runs in the process that appends the candles."""

    def __call__(
        self,
        run_id: str,
        partition: int,
        first_offset: int,
        first_sequence: int,
        columns: tuple[tuple[Any, ...], ...],
    ) -> None: ...

    def report(self) -> Any:
        """What the sink has to say once every candle is appended (picklable: it comes back
        from the market-data process)."""

    def commit(self) -> None:
        """The log has committed the candles handed over: make their rows durable too."""

    def close(self) -> None:
        """Let go of the store; rows not committed are rolled back."""


class MarketDataPublisher:
    def __init__(
        self,
        log: SharedWriting,
        run_id: str,
        sink: MarketDataSink | None = None,
        first_sequence: int = 0,
    ) -> None:
        """``log``: the engine's log, holding the writer lock; its next commit covers what
        the child appends. ``first_sequence``: the sequence of the first candle handed over
        (a replay's copies continue the replayed run's numbering)."""
        self._log = log
        context = multiprocessing.get_context("fork")
        parent = os.getpid()
        # Every pipe exists before the first fork, so each helper can close the ends that
        # are not its own: a helper reading from the engine then sees EOF when it dies.
        self._conn, child_end = context.Pipe(duplex=True)
        sink_end = channel_end = decision_end = None
        self._decision: Connection | None = None
        if sink is not None:
            sink_end, channel_end = context.Pipe(duplex=True)
            self._decision, decision_end = context.Pipe(duplex=True)
        # The sink, if any, runs in a third process fed by the market-data process, so
        # writing read-model rows does not hold up appending to the log (three busy
        # processes on two cores beat two where one does both).
        self._sink_process = None
        if sink is not None:
            self._sink_process = context.Process(
                target=_serve_sink,
                args=(
                    parent,
                    sink_end,
                    decision_end,
                    sink,
                    (self._conn, child_end, channel_end, self._decision),
                ),
                daemon=True,
                name="cdb-candle-sink",
            )
            self._sink_process.start()
        self._process = context.Process(
            target=_serve,
            args=(
                parent,
                log.root,
                run_id,
                child_end,
                channel_end,
                first_sequence,
                (self._conn, sink_end, self._decision, decision_end),
            ),
            daemon=True,
            name="cdb-market-data",
        )
        self._process.start()
        close_inherited([child_end, sink_end, channel_end, decision_end])
        self.sink_report: Any = None

    def publish(self, candles: list[Candle]) -> None:
        try:
            # Columns of plain values pickle in C; named tuples would cost a Python call each.
            columns = tuple(zip(*candles, strict=True))
            self._conn.send_bytes(pickle.dumps(columns, protocol=pickle.HIGHEST_PROTOCOL))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise LogError(self._failure("the market data publisher stopped")) from None

    def publish_copies(self, timestamps: list[int], values: list[bytes], run_from: str) -> None:
        """Append ``values``, market_data events of run ``run_from`` (their timestamps
        given), as this publisher's run: a replay's copies of the candles it replays.
        They are relabelled in the child; the sequences are the originals'."""
        if self._sink_process is not None:
            raise ValueError("copied candles are not handed to a sink")
        if not values:
            return
        try:
            self._conn.send_bytes(
                b"C"
                + pickle.dumps((run_from, timestamps, values), protocol=pickle.HIGHEST_PROTOCOL)
            )
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise LogError(self._failure("the market data publisher stopped")) from None

    def finish(self, trailer: list[Event]) -> TopicDigest:
        """Append ``trailer`` after the candles, wait until all is synced, hand where the
        partitions end to the log's next commit, and return the digest."""
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
        _, count, finished, self.sink_report, positions = reply
        self._log.adopt(positions)
        digest = TopicDigest()
        digest.count, digest.finished = count, finished
        return digest

    def commit_sink(self) -> None:
        """After the log's commit: the sink commits its rows (if it is still there: a sink
        that stood down or died leaves them to the projector, which folds from the log)."""
        if self._decision is None:
            return
        try:
            self._decision.send_bytes(b"commit")
            self._decision.recv_bytes()
        except (OSError, EOFError):
            pass
        finally:
            self._decision.close()
            self._decision = None
            if self._sink_process is not None:
                self._sink_process.join(timeout=30)

    def abort(self) -> None:
        for process in (self._process, self._sink_process):
            if process is not None:
                if process.is_alive():
                    process.terminate()
                process.join(timeout=5)
        self._conn.close()
        if self._decision is not None:
            self._decision.close()
            self._decision = None

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


class _SinkChannel:
    """The market-data process's end of the pipe to the sink's process."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def send(self, at: tuple[str, int, int, int], columns: bytes) -> None:
        with contextlib.suppress(OSError):  # a sink that died stood down: nothing is lost
            self._conn.send_bytes(pickle.dumps((at, columns), protocol=pickle.HIGHEST_PROTOCOL))

    def report(self) -> Any:
        """Wait until every batch is written; the sink's report (None if it died)."""
        try:
            self._conn.send_bytes(b"")
            return self._conn.recv()
        except (OSError, EOFError):
            return None
        finally:
            self._conn.close()


def _serve_sink(
    parent: int,
    conn: Connection,
    decision: Connection,
    sink: MarketDataSink,
    others: tuple[Connection | None, ...],
) -> None:
    die_with_parent(parent)
    close_inherited(others)
    gc.disable()
    committed = False
    try:
        while data := conn.recv_bytes():
            (run_id, partition, first_offset, first_sequence), columns = pickle.loads(data)
            sink(run_id, partition, first_offset, first_sequence, pickle.loads(columns))
        conn.send(sink.report())
        # The rows stay uncommitted until the engine has committed the log.
        if decision.recv_bytes() == b"commit":
            sink.commit()
            committed = True
            decision.send_bytes(b"ok")
    except (EOFError, OSError):
        pass  # the engine or the market-data process is gone (aborted): so is the run
    finally:
        if not committed:
            sink.close()
        conn.close()
        decision.close()


def _serve(
    parent: int,
    log_root: Path,
    run_id: str,
    conn: Connection,
    channel_end: Connection | None,
    first_sequence: int,
    others: tuple[Connection | None, ...],
) -> None:
    die_with_parent(parent)
    close_inherited(others)
    sink_process = _SinkChannel(channel_end) if channel_end is not None else None
    gc.disable()  # acyclic, short-lived objects only; see streams.backtest
    log = EmbeddedLog(log_root, lock=False)
    digest = TopicDigest()
    sequence = first_sequence
    try:
        while True:
            data = conn.recv_bytes()
            if not data:
                break
            if data[:1] == b"T":  # events that close the topic, already encoded
                trailer: list[tuple[int, bytes]] = pickle.loads(data[1:])
                if trailer:
                    log.append(topics.MARKET_DATA, run_id, trailer)
                digest.update([value for _, value in trailer])
                continue
            if data[:1] == b"C":  # another run's candles, to append as this run's
                run_from, stamps, originals = pickle.loads(data[1:])
                copies = relabeller(run_from, run_id)(b"\n".join(originals)).split(b"\n")
                log.append(topics.MARKET_DATA, run_id, list(zip(stamps, copies, strict=True)))
                sequence += len(copies)
                digest.update(copies)
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
            if sink_process is not None:
                sink_process.send((run_id, partition, first_offset, sequence), data)
            sequence += len(records)
            digest.update([value for _, value in records])
        log.commit()  # a helper's commit syncs; the engine's commit makes it visible
        positions = log.positions()
        log.close()
        report = sink_process.report() if sink_process is not None else None
        sink_process = None
        conn.send(("ok", digest.count, digest.hexdigest(), report, positions))
    except BaseException as exc:  # report everything to the engine, then stop
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        if sink_process is not None:  # after a failure: let it finish what it has
            sink_process.report()
        conn.close()
