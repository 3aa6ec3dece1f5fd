"""Asking a running process's ``/health`` and ``/metrics`` (``streams.observability``) how
it is, the way an orchestrator or Prometheus would."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from streams.kafka_log import KafkaLog

# No proxy from the environment may stand between a test and the loopback servers.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

MetricSamples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body) of ``GET url``; error statuses are answers too, no answer is 0."""
    try:
        with _OPENER.open(url, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), bytes(error.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, b""


def health(port: int) -> tuple[int, dict[str, Any]]:
    """(status, body) of the process's ``/health``; (0, {}) while it does not answer."""
    status, body = http_get(f"http://127.0.0.1:{port}/health")
    return status, (orjson.loads(body) if status else {})


def healthy(port: int) -> bool:
    """The process answers ``/health`` with 200, status "ok" and ready."""
    status, body = health(port)
    return status == 200 and body["status"] == "ok" and body["ready"] is True


def metric_samples(port: int) -> MetricSamples:
    """Every sample of the process's ``/metrics``, by name and labels ({} if it does not
    answer)."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return {}
    return {
        (sample.name, frozenset(sample.labels.items())): float(sample.value)
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def metric_total(port: int, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none yet)."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample, sample_labels), value in metric_samples(port).items()
        if sample == name and wanted <= sample_labels
    )


def records_of(log: KafkaLog, topic: str, run_id: str, kind: str | None = None) -> int:
    """How many records of ``run_id`` (of event type ``kind``, if given) ``topic`` holds,
    on every partition: what a test waits on while a broker's consumers work."""
    needle = f'"type":"{kind}"'.encode() if kind else b""
    return sum(
        1
        for p in range(log.partitions(topic))
        for r in log.read(topic, p, verify=False)
        if r.key == run_id and needle in r.value
    )
