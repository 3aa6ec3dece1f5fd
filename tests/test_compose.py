"""docker-compose.yml matches the seed (R14-R18); no Docker engine is needed to check it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.cli import closed_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]


def _ports(service: str) -> set[int]:
    return {int(str(p).split(":")[0]) for p in SERVICES[service].get("ports", [])}


def _env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def test_services_and_the_seeds_ports() -> None:
    assert {"kafka", "postgres", "redis", "worker", "prometheus", "grafana"} <= set(SERVICES)
    # The seed's ports, each on the process that serves it (docs/live.md); the feed's,
    # 8000, on the feed a user runs with `docker compose run`.
    assert _ports("signal") == {8001}
    assert _ports("risk") == {8002}
    assert _ports("execution") == {8003}
    assert _ports("project") == {8004}
    assert _ports("intensity") == {8005}
    assert _ports("worker") == {8001}  # the fused alternative to the three agents
    for stage in ("signal", "risk", "execution"):
        assert SERVICES[stage]["command"][3:5] == ["agent", stage]
    for service in APP_SERVICES:
        assert "0.0.0.0" in SERVICES[service]["command"]  # reachable from outside
    assert _ports("prometheus") == {9090}
    assert _ports("grafana") == {3000}
    assert _ports("redis") == {6379}
    assert _ports("postgres") == {5432}


APP_SERVICES = ("signal", "risk", "execution", "worker", "project", "intensity")


def test_each_cdb_service_is_healthy_only_when_its_health_answers() -> None:
    for service in APP_SERVICES:
        check = SERVICES[service]["healthcheck"]
        port = _ports(service).pop()
        assert check["test"][:3] == ["CMD", "python3", "-c"], service
        assert "/health" in check["test"][3] and check["test"][4] == str(port), service
        # The probe as the container runs it: against nothing listening, it fails.
        probe = subprocess.run(
            [sys.executable, "-c", check["test"][3], str(closed_port())],
            capture_output=True,
            timeout=30,
        )
        assert probe.returncode != 0, service


def test_the_staged_agents_start_by_default_and_the_fused_worker_on_request() -> None:
    for stage in ("signal", "risk", "execution"):
        assert "profiles" not in SERVICES[stage]
    assert SERVICES["worker"]["profiles"] == ["fused"]
    # The risk agent runs the risk service (Redis is named to every app); on its own, the
    # service goes with the fused worker.
    assert _env("risk")["REDIS_HOST"] == "redis"
    assert SERVICES["intensity"]["profiles"] == ["fused"]


def test_kafka_is_a_single_kraft_node() -> None:
    env = _env("kafka")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert int(env["KAFKA_LOG_RETENTION_HOURS"]) == 14 * 24


def test_database_name_user_and_secrets_from_the_environment() -> None:
    env = _env("postgres")
    assert env["POSTGRES_DB"] == "claire_de_binare"
    assert env["POSTGRES_USER"] == "claire"
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD(:\?[^}]*)?\}", env["POSTGRES_PASSWORD"])
    redis_command = " ".join(SERVICES["redis"]["command"])
    assert "--requirepass ${REDIS_PASSWORD" in redis_command
    worker = _env("risk")
    assert worker["CDB_LOG"] == "kafka://kafka:9092"
    assert worker["POSTGRES_DB"] == "claire_de_binare"
    assert all(SERVICES[service]["env_file"] == ".env" for service in APP_SERVICES)


def test_named_volumes_and_no_profiles() -> None:
    assert {"cdb_postgres_data", "cdb_redis_data", "cdb_prom_data", "cdb_grafana_data"} <= set(
        COMPOSE["volumes"]
    )
    mounts = {
        service: [str(v).split(":")[0] for v in spec.get("volumes", [])]
        for service, spec in SERVICES.items()
    }
    assert mounts["postgres"] == ["cdb_postgres_data"]
    assert mounts["redis"] == ["cdb_redis_data"]
    assert mounts["prometheus"] == ["cdb_prom_data"]
    assert mounts["grafana"] == ["cdb_grafana_data"]
    # Everything starts with `docker compose up`, but the fused worker, the agents'
    # alternative (the same stages in one process; both at once would run every run twice),
    # and the risk service on its own, which the risk agent runs otherwise.
    assert [name for name, spec in SERVICES.items() if "profiles" in spec] == [
        "worker",
        "intensity",
    ]


def test_no_secret_is_written_down() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    for line in text.splitlines():
        if re.search(r"PASSWORD:\s", line):
            assert "${" in line, line
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert "POSTGRES_PASSWORD=" in example and "REDIS_PASSWORD=" in example
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
