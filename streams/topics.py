"""Topic names, which event goes to which topic, and how keys map to partitions."""

from __future__ import annotations

import zlib
from collections.abc import Mapping

MARKET_DATA = "market_data"
SIGNALS = "signals"
RISK_DECISIONS = "risk_decisions"
ORDERS = "orders"
ORDER_RESULTS = "order_results"
ALERTS = "alerts"
PORTFOLIO = "portfolio"
RUNS = "runs"
DEAD_LETTERS = "dead_letters"
# The staged topology's hand-off between its agents (``streams.staged``): progress and
# fill-due records, not events. No digest or read model takes it in.
STAGE_CONTROL = "stage_control"
INTERNAL_TOPICS: frozenset[str] = frozenset({STAGE_CONTROL})

ALL_TOPICS: tuple[str, ...] = (
    MARKET_DATA,
    SIGNALS,
    RISK_DECISIONS,
    ORDERS,
    ORDER_RESULTS,
    ALERTS,
    PORTFOLIO,
    RUNS,
    DEAD_LETTERS,
)

TOPIC_OF_EVENT: Mapping[str, str] = {
    "market_data": MARKET_DATA,
    "market_data_completed": MARKET_DATA,
    "dead_letter": DEAD_LETTERS,
    "signal": SIGNALS,
    "risk_decision": RISK_DECISIONS,
    "order": ORDERS,
    "order_result": ORDER_RESULTS,
    "alert": ALERTS,
    "position_state": PORTFOLIO,
    "portfolio_snapshot": PORTFOLIO,
    "risk_state": PORTFOLIO,
    "intensity_changed": PORTFOLIO,
    "run_metadata": RUNS,
    "run_completed": RUNS,
}


def partition_for(key: str, partitions: int) -> int:
    """Stable key -> partition mapping: one run (portfolio) stays in one partition, in order."""
    if partitions <= 1:
        return 0
    return zlib.crc32(key.encode()) % partitions


RETENTION_14_DAYS_MS = 14 * 24 * 60 * 60 * 1000

# Topics the read models are folded from keep everything: a projection can only be
# rebuilt from what its topics still hold. Input and intermediate topics keep 14 days (R17):
# market data can be re-ingested from its source, and signals and decisions are also
# summarised in the kept topics (orders, results, portfolio, alerts).
KEEP_FOREVER: frozenset[str] = frozenset(
    {RUNS, ORDERS, ORDER_RESULTS, PORTFOLIO, ALERTS, DEAD_LETTERS}
)


def retention_ms(topic: str) -> int | None:
    """Retention of ``topic`` in milliseconds; None keeps everything."""
    return None if topic in KEEP_FOREVER else RETENTION_14_DAYS_MS
