"""The engine's state as a typed, versioned value: what a snapshot holds.

A restored pipeline goes on byte for byte as the one that gave its state; the encoding
reads back every value as written; a state of another version, shape or configuration is
refused with its reason, and leaves the pipeline as it was.
"""

from __future__ import annotations

import math
import pickle
import random
import struct
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.events import Candle
from domain.execution import CostModel
from domain.intensity import IntensityConfig
from domain.pipeline import PaperTradingPipeline
from domain.pipeline_state import (
    STATE_VERSION,
    EngineStateError,
    PipelineState,
    decode_state,
    encode_state,
)
from domain.risk import RiskConfig, RiskEngine, RiskMemory
from domain.strategies import strategy_factory, strategy_params
from tests.domain.builders import MINUTE_MS, candle

SYMBOLS = ("BTC_USD", "ETH_USD")
PARAMS = {"sma_cross": {"fast": 3, "slow": 8}, "momentum_v1": {"lookback": 6, "exit_lookback": 3}}

# Every watch on, limits that bind now and then, and the adaptive intensity scoring trades.
BUSY = RiskConfig.model_validate(
    {
        "kill_switch_on_critical": False,
        "cooldown": {"after_loss_minutes": 5, "global_after_loss_minutes": 2},
        "max_open_positions": 1,
        "drawdown_warning_pct": 3.0,
        "max_drawdown_pct": 40.0,
        "max_daily_drawdown_pct": 4.0,
        "daily_drawdown_warning_pct": 2.0,
        "max_orders_per_hour": 6,
        "max_consecutive_losses": 3,
        "intensity": IntensityConfig(enabled=True, window_trades=6, min_trades=2),
    }
)


def _pipeline(
    strategy_id: str = "sma_cross",
    config: RiskConfig = BUSY,
    params: dict[str, Any] | None = None,
) -> PaperTradingPipeline:
    checked = strategy_params(strategy_id, params or PARAMS[strategy_id])
    return PaperTradingPipeline(
        "run",
        strategy_id,
        strategy_factory(strategy_id, checked),
        RiskEngine(config),
        CostModel(fee_bps=10.0, slippage_bps=5.0),
        10_000.0,
        MINUTE_MS,
    )


def _series(count: int = 1_500, seed: int = 3) -> list[Candle]:
    """Two symbols' random walks, 10-minute candles (a UTC day every 144)."""
    rng = random.Random(seed)
    prices = {symbol: 100.0 for symbol in SYMBOLS}
    series = []
    for i in range(count):
        for symbol in SYMBOLS:
            price = prices[symbol]
            close = price * (1.0 + rng.gauss(0.0, 0.012))
            series.append(candle(close, symbol=symbol, timestamp=i * 10 * MINUTE_MS, open_=price))
            prices[symbol] = close
    return series


SERIES = _series()


def _events(pipeline: PaperTradingPipeline, candles: list[Candle]) -> list[bytes]:
    return [e.model_dump_json().encode() for c in candles for e in pipeline.on_candle(c)]


def _after(candles: int, strategy_id: str = "sma_cross") -> PaperTradingPipeline:
    pipeline = _pipeline(strategy_id)
    _events(pipeline, SERIES[:candles])
    return pipeline


@pytest.mark.parametrize("strategy_id", sorted(PARAMS))
def test_a_restored_pipeline_goes_on_byte_for_byte(strategy_id: str) -> None:
    whole = _pipeline(strategy_id)
    events = [_events(whole, [c]) for c in SERIES]
    final = [e.model_dump_json() for e in whole.finish(0)]
    pending_at_a_split = 0
    for split in range(97, len(SERIES), 211):
        head = _after(split, strategy_id)
        pending_at_a_split += head.has_pending_orders
        restored = _pipeline(strategy_id)
        restored.restore_state(head.export_state())
        assert restored.export_state() == head.export_state()
        tail = [_events(restored, [c]) for c in SERIES[split:]]
        assert tail == events[split:], split
        assert [e.model_dump_json() for e in restored.finish(0)] == final
    assert pending_at_a_split  # the state carried orders waiting for their next candle


def test_the_busy_run_reaches_every_part_of_the_state() -> None:
    state = _after(2_000).state()
    assert state.intensity is not None and len(state.intensity.window) > 0
    assert state.risk_memory != RiskMemory() and state.risk_memory.order_times
    assert state.trading_state in ("ACTIVE", "REDUCING")
    assert list(state.strategies) == list(SYMBOLS)
    assert state.portfolio.positions and state.statistics.trades > 0
    assert set(state.sequences) >= {"signal", "risk_decision", "order", "alert", "risk_state"}


def test_the_payload_is_json_with_its_state_version() -> None:
    payload = orjson.loads(_after(500).export_state())
    assert payload["state_version"] == STATE_VERSION == 1
    assert list(payload) == list(PipelineState.model_fields)


def test_a_state_value_is_detached_from_the_pipeline() -> None:
    pipeline = _after(700)
    state = pipeline.state()
    before = encode_state(state)
    _events(pipeline, SERIES[700:1_400])
    assert encode_state(state) == before != pipeline.export_state()
    restored = _pipeline()
    restored.restore(state)
    _events(restored, SERIES[700:900])
    assert encode_state(state) == before


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)


def _bits(value: float) -> bytes:
    return b"nan" if math.isnan(value) else struct.pack("<d", value)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(values=st.lists(finite_or_not, min_size=6, max_size=6))
def test_every_float_reads_back_as_written(values: list[float]) -> None:
    """Any float, where the state holds floats: shortest text that reads back as the same
    float, -0.0 and subnormals included; infinities and NaN as JSON's constants."""
    state = _after(400).state()
    cash, mark, mean, equity, close, pnl = values
    marks = dict(state.portfolio.marks) | {"BTC_USD": mark}
    strategies = dict(state.strategies)
    held = strategies["ETH_USD"]
    closes = [close, *held.state["closes"][1:]]
    strategies["ETH_USD"] = held.model_copy(update={"state": held.state | {"closes": closes}})
    assert state.intensity is not None
    window = [(pnl, 1.0), *state.intensity.window[1:]]
    state = state.model_copy(
        update={
            "portfolio": state.portfolio.model_copy(update={"cash": cash, "marks": marks}),
            "statistics": state.statistics.model_copy(update={"mean": mean}),
            "equity": equity,
            "strategies": strategies,
            "intensity": state.intensity.model_copy(update={"window": window}),
        }
    )
    back = decode_state(encode_state(state))
    assert back.intensity is not None
    got = (
        back.portfolio.cash,
        back.portfolio.marks["BTC_USD"],
        back.statistics.mean,
        back.equity,
        back.strategies["ETH_USD"].state["closes"][0],
        back.intensity.window[0].pnl,
    )
    assert [_bits(v) for v in got] == [_bits(v) for v in values]
    assert encode_state(back) == encode_state(state)


def test_dicts_keep_their_order() -> None:
    """Equity and exposure are float sums over positions in their order."""
    pipeline = _after(900)
    state = pipeline.state()
    reordered = state.model_copy(
        update={
            "portfolio": state.portfolio.model_copy(
                update={"marks": dict(reversed(state.portfolio.marks.items()))}
            )
        }
    )
    assert list(decode_state(encode_state(reordered)).portfolio.marks) == list(
        reversed(state.portfolio.marks)
    )


# -- what is refused ------------------------------------------------------------------------


def _refused(payload: bytes, match: str, pipeline: PaperTradingPipeline | None = None) -> None:
    """``payload`` is refused with ``match``, and the pipeline goes on as an untouched one."""
    target = pipeline or _after(300)
    twin = _after(300) if pipeline is None else None
    with pytest.raises(EngineStateError, match=match):
        target.restore_state(payload)
    if twin is not None:
        assert _events(target, SERIES[300:600]) == _events(twin, SERIES[300:600])


def _edited(**changes: Any) -> bytes:
    payload = orjson.loads(_after(500).export_state())
    for key, value in changes.items():
        if value is _DROP:
            del payload[key]
        else:
            payload[key] = value
    return orjson.dumps(payload)


_DROP = object()


_UNPICKLED: list[str] = []


def _ran(what: str) -> None:
    _UNPICKLED.append(what)


class _Loaded:
    """Unpickling this calls ``_ran``: what any pickled payload may do when read."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_ran, ("code named by the payload",))


def test_a_pickled_state_is_refused_unread() -> None:
    payload = pickle.dumps({"portfolio": _Loaded()})
    _refused(payload, "not an engine state")
    assert _UNPICKLED == []
    pickle.loads(payload)  # what restoring it as before would have done
    assert _UNPICKLED == ["code named by the payload"]


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "not an engine state"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"state_version": "1"}', "not an integer"),
        (b'{"candles": 3}', "not an integer"),  # no version at all
    ],
)
def test_what_is_not_an_engine_state_is_refused(payload: bytes, match: str) -> None:
    _refused(payload, match)


def test_a_state_with_unknown_missing_or_mistyped_parts_is_refused() -> None:
    _refused(_edited(surprise=1), "surprise: Extra inputs are not permitted")
    _refused(_edited(sequences=_DROP), "sequences: Field required")
    _refused(_edited(candles="many"), "candles: Input should be a valid integer")
    _refused(_edited(trading_state="PAUSED"), "trading_state")


def test_a_newer_state_version_is_refused() -> None:
    _refused(_edited(state_version=STATE_VERSION + 1), "engine state v2 is newer")


def test_an_older_state_version_needs_its_step() -> None:
    _refused(_edited(state_version=0), "no upcaster for engine state v0")


def test_an_older_state_comes_through_its_step() -> None:
    """Version 0 here: the shape before the Risk Engine remembered anything (a run with
    the default rules, whose memory stays empty). Its step adds an empty memory."""
    plain = RiskConfig()
    head = _pipeline(config=plain)
    _events(head, SERIES[:800])
    assert head.risk_memory == RiskMemory()
    payload = orjson.loads(head.export_state())
    del payload["risk_memory"]
    payload["state_version"] = 0

    def upcast_v0_v1(old: dict[str, Any]) -> dict[str, Any]:
        return old | {"risk_memory": {}}

    state = decode_state(orjson.dumps(payload), {0: upcast_v0_v1})
    assert state.state_version == 1
    restored = _pipeline(config=plain)
    restored.restore(state)
    assert restored.export_state() == head.export_state()
    assert _events(restored, SERIES[800:1_200]) == _events(head, SERIES[800:1_200])


def test_a_state_of_another_configuration_is_refused() -> None:
    payload = _after(500).export_state()
    _refused(
        payload, "strategy 'sma_cross', this pipeline runs 'momentum_v1'", _pipeline("momentum_v1")
    )
    _refused(payload, "intensity is on in it", _pipeline(config=RiskConfig()))
    _refused(payload, "8 closes kept, not slow=9", _pipeline(params={"fast": 3, "slow": 9}))


def test_a_refused_state_leaves_the_pipeline_as_it_was() -> None:
    pipeline = _after(300)
    before = pipeline.export_state()
    broken = orjson.loads(_after(600).export_state())
    broken["strategies"]["ETH_USD"]["state"]["closes"] = [1.0]  # the last part restored
    with pytest.raises(EngineStateError, match="1 closes kept"):
        pipeline.restore_state(orjson.dumps(broken))
    assert pipeline.export_state() == before


def test_an_open_position_without_a_mark_is_refused() -> None:
    pipeline = _pipeline()
    for c in SERIES:
        pipeline.on_candle(c)
        if pipeline.portfolio.open_count:
            break
    payload = orjson.loads(pipeline.export_state())
    assert any(p["quantity"] for p in payload["portfolio"]["positions"].values())
    payload["portfolio"]["marks"] = {}
    _refused(orjson.dumps(payload), "open positions without a mark")
