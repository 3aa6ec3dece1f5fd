"""Batches of a faust stream's records, acknowledged by the caller once handled.

faust's own ``Stream.take_events`` is not used anywhere: under load it acknowledged a
record it never handed over (a stage agent then waited for ever on a fill it had been
sent, and a consumer group committed past it). ``batches`` reads a stream whose automatic
acknowledgements are off (``stream.noack()``) and hands over every event; the caller
acknowledges a batch's events only after the batch's output is written, so the committed
offsets follow the output.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


async def batches(manual: Any, max_events: int, settle_s: float) -> AsyncIterator[list[Any]]:
    """The events of ``manual`` in batches: every event that reached the agent within
    ``settle_s`` of the batch's first, at most ``max_events``."""
    clock = asyncio.get_running_loop().time
    waiting = manual.channel
    events: list[Any] = []
    settled = 0.0
    async for event in manual.events():
        if not events:
            settled = clock() + settle_s
        events.append(event)
        if len(events) < max_events and waiting.empty() and settled > clock():
            # faust hands records over one at a time: a moment lets the rest of a fetch in.
            await asyncio.sleep(settled - clock())
        if len(events) < max_events and not waiting.empty():
            continue
        yield events
        events = []


async def acknowledge(manual: Any, events: list[Any]) -> None:
    """Acknowledge ``events`` (their output is written): the consumer may commit them."""
    for event in events:
        await manual.ack(event)
