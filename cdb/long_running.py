"""What the long-running commands share: ``--metrics-port`` and the ``/health`` and
``/metrics`` server it starts, and a clean stop on SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator

from cdb.common import UsageError, port_arg
from streams.observability import Health, Metrics, ObservabilityServer, PortInUse


class Stop:
    """Set by SIGTERM or SIGINT: the work stops at its next step, cleanly."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stop]:
        def stop(_signum: int, _frame: object) -> None:
            self.requested = True

        previous = [signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)]
        try:
            yield self
        finally:
            for s, handler in zip((signal.SIGTERM, signal.SIGINT), previous, strict=True):
                signal.signal(s, handler)


def add_service_arguments(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument(
        "--metrics-port",
        type=port_arg,
        default=None,
        help=f"serve /health and /metrics on this port (default {port}, if it is free; "
        "0: any free port; -1: none)",
    )
    parser.set_defaults(seed_port=port)
    parser.add_argument("--metrics-host", default="127.0.0.1", help="the address to serve them on")


def serve(args: argparse.Namespace, health: Health, metrics: Metrics) -> ObservabilityServer | None:
    """Serve health and metrics where ``--metrics-port`` says. On the default port, one
    that is taken is a warning (the process's work does not depend on it); a port asked
    for and taken is an error."""
    port = args.seed_port if args.metrics_port is None else args.metrics_port
    if port < 0:
        return None
    try:
        server = ObservabilityServer(port, health, metrics.registry, host=args.metrics_host).start()
    except PortInUse:
        taken = f"port {port} on {args.metrics_host} is already in use"
        if args.metrics_port is None:
            sys.stderr.write(
                f"cdb: warning: {taken}; health and metrics are not served "
                "(choose a port with --metrics-port)\n"
            )
            return None
        raise UsageError(f"{taken}: choose another --metrics-port, or -1 for none") from None
    sys.stderr.write(f"cdb: health and metrics at {server.url}/health and {server.url}/metrics\n")
    return server


@contextlib.contextmanager
def served(
    args: argparse.Namespace, health: Health, metrics: Metrics
) -> Iterator[ObservabilityServer | None]:
    """``serve`` for the block; on the way out health says the process is stopping, and
    the server stops."""
    server = serve(args, health, metrics)
    try:
        yield server
    finally:
        health.mark_stopping()
        if server is not None:
            server.stop()
