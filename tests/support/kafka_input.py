"""A run's input written to a broker by hand, in parts: what a test needs to have an engine
on Kafka at work when it kills it."""

from __future__ import annotations

from domain.events import Candle, MarketDataCompleted
from streams import topics
from streams.codec import encode, encode_market_data
from streams.kafka_log import KafkaLog


def publish_candles(kafka: KafkaLog, run_id: str, candles: list[Candle], first: int) -> None:
    """``candles`` as the run's market data from sequence ``first`` on, committed."""
    kafka.append(
        topics.MARKET_DATA,
        run_id,
        [(c.timestamp, encode_market_data(run_id, first + i, c)) for i, c in enumerate(candles)],
    )
    kafka.commit()


def publish_end(kafka: KafkaLog, run_id: str, candles: list[Candle]) -> None:
    """The run's end of input, after all of ``candles`` (no dead letters)."""
    end = MarketDataCompleted(
        event_id=f"{run_id}:market_data_completed:0",
        run_id=run_id,
        sequence=0,
        timestamp=candles[-1].timestamp + candles[-1].interval_ms,
        candles=len(candles),
        dead_letters=0,
    )
    kafka.append(topics.MARKET_DATA, run_id, [(end.timestamp, encode(end))])
    kafka.commit()
