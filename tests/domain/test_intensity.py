"""Adaptive intensity (R12): the score, the parameters it sets, and the tracker's changes."""

from __future__ import annotations

import itertools
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.events import IntensityChanged, validate_event
from domain.intensity import (
    NEUTRAL_SCORE,
    ClosedTrade,
    IntensityConfig,
    IntensityParameters,
    IntensityTracker,
    intensity_parameters,
    intensity_score,
    quantised_score,
)

DEFAULTS = IntensityConfig()
ON = IntensityConfig(enabled=True)
DRY = IntensityParameters(5.0, 50.0, 25.0, 60.0)
NEUTRAL = IntensityParameters(10.0, 75.0, 50.0, 30.0)
WET = IntensityParameters(15.0, 100.0, 75.0, 0.0)


def win(pnl: float = 10.0, return_pct: float = 2.0) -> ClosedTrade:
    return ClosedTrade(pnl, return_pct)


def loss(pnl: float = 10.0, return_pct: float = 2.0) -> ClosedTrade:
    return ClosedTrade(-pnl, -return_pct)


# -- the score ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [5, 20, 50])
def test_all_wins_score_one(n: int) -> None:
    assert intensity_score([win()] * n, DEFAULTS) == 1.0


@pytest.mark.parametrize("n", [5, 20, 50])
def test_all_losses_score_zero(n: int) -> None:
    assert intensity_score([loss()] * n, DEFAULTS) == 0.0


@pytest.mark.parametrize("n", [0, 1, 4])
def test_fewer_than_min_trades_is_neutral(n: int) -> None:
    assert intensity_score([loss()] * n, DEFAULTS) == NEUTRAL_SCORE
    assert intensity_score([win()] * n, DEFAULTS) == NEUTRAL_SCORE


def test_the_score_reads_only_the_latest_window() -> None:
    config = IntensityConfig(window_trades=5)
    assert intensity_score([loss()] * 30 + [win()] * 5, config) == 1.0
    assert intensity_score([win()] * 30 + [loss()] * 5, config) == 0.0


def test_the_components_as_documented() -> None:
    # Returns +2, +2, -2, -2, +2: cumulative 2, 4, 2, 0, 2 -> drawdown 4 of 10 moved.
    trades = [win(), win(), loss(), loss(), win()]
    win_rate, pf_norm, dd_norm, streak_norm = 3 / 5, (30 / 20) / 3, 4 / 10, 0.5 + 0.5 / 5
    expected = 0.30 * win_rate + 0.30 * pf_norm + 0.25 * (1 - dd_norm) + 0.15 * streak_norm
    assert intensity_score(trades, DEFAULTS) == pytest.approx(expected, abs=1e-12)


def test_a_losing_streak_at_the_end_lowers_the_score() -> None:
    recovered = [loss()] * 3 + [win()] * 3
    slipping = [win()] * 3 + [loss()] * 3
    assert intensity_score(slipping, DEFAULTS) < intensity_score(recovered, DEFAULTS)


def test_a_flat_trade_is_neither_a_win_nor_a_loss_and_ends_a_streak() -> None:
    flat = ClosedTrade(0.0, 0.0)
    assert intensity_score([flat] * 5, DEFAULTS) == pytest.approx(0.25 + 0.15 * 0.5)
    assert intensity_score([win()] * 5 + [flat], DEFAULTS) < 1.0


trade_sizes = st.tuples(
    st.floats(min_value=0.01, max_value=1e6, allow_nan=False),
    st.floats(min_value=0.01, max_value=100.0, allow_nan=False),
)


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(trade_sizes, min_size=1, max_size=40),
    wins=st.lists(st.booleans(), min_size=40, max_size=40),
    flip=st.integers(min_value=0, max_value=39),
)
def test_turning_a_loss_into_a_win_never_lowers_the_score(
    sizes: list[tuple[float, float]], wins: list[bool], flip: int
) -> None:
    """Monotonic in the win rate: the same trades, one loss turned into a win of the
    same size, never score lower (win rate, profit factor and streak rise or stay, the
    drawdown falls or stays)."""
    trades = [
        win(pnl, ret) if won else loss(pnl, ret)
        for (pnl, ret), won in zip(sizes, wins, strict=False)
    ]
    index = flip % len(trades)
    better = list(trades)
    better[index] = ClosedTrade(abs(trades[index].pnl), abs(trades[index].return_pct))
    before, after = intensity_score(trades, DEFAULTS), intensity_score(better, DEFAULTS)
    assert 0.0 <= before <= 1.0 and 0.0 <= after <= 1.0
    assert after >= before - 1e-9


@settings(max_examples=200, deadline=None)
@given(
    trades=st.lists(
        st.tuples(
            st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
            st.floats(min_value=-100.0, max_value=1e4, allow_nan=False),
        ),
        max_size=60,
    )
)
def test_the_score_is_always_within_zero_and_one(trades: list[tuple[float, float]]) -> None:
    score = intensity_score([ClosedTrade(*t) for t in trades], DEFAULTS)
    assert 0.0 <= score <= 1.0


# -- the parameters -----------------------------------------------------------------------------


def test_the_ends_and_the_middle() -> None:
    assert intensity_parameters(0.0, DEFAULTS) == DRY
    assert intensity_parameters(1.0, DEFAULTS) == WET
    assert intensity_parameters(0.5, DEFAULTS) == NEUTRAL


def test_the_neutral_score_gives_the_static_risk_defaults_where_it_can() -> None:
    from domain.risk.config import RiskConfig

    static = RiskConfig()
    assert NEUTRAL.risk_pct == static.sizing.risk_pct
    assert NEUTRAL.max_symbol_exposure_pct == static.max_symbol_exposure_pct
    assert WET.max_total_exposure_pct == static.max_total_exposure_pct


@pytest.mark.parametrize("score", [0.0, 0.01, 0.3, 0.333, 0.5, 0.77, 0.99, 1.0])
def test_parameters_interpolate_linearly_at_the_quantised_score(score: float) -> None:
    q = quantised_score(score, DEFAULTS)
    assert q == pytest.approx(round(score / 0.05) * 0.05)
    got = intensity_parameters(score, DEFAULTS)
    for value, dry, wet in zip(got, DRY, WET, strict=True):
        assert value == pytest.approx(dry + q * (wet - dry), abs=1e-4)


@settings(max_examples=300, deadline=None)
@given(a=st.floats(0.0, 1.0), b=st.floats(0.0, 1.0))
def test_parameters_stay_between_their_ends_and_move_with_the_score(a: float, b: float) -> None:
    low, high = sorted((a, b))
    p, q = intensity_parameters(low, DEFAULTS), intensity_parameters(high, DEFAULTS)
    for value in (p, q):
        assert DRY.risk_pct <= value.risk_pct <= WET.risk_pct
        assert DRY.max_total_exposure_pct <= value.max_total_exposure_pct
        assert value.max_total_exposure_pct <= WET.max_total_exposure_pct
        assert DRY.max_symbol_exposure_pct <= value.max_symbol_exposure_pct
        assert value.max_symbol_exposure_pct <= WET.max_symbol_exposure_pct
        assert WET.cooldown_minutes <= value.cooldown_minutes <= DRY.cooldown_minutes
    assert p.risk_pct <= q.risk_pct
    assert p.cooldown_minutes >= q.cooldown_minutes


def test_small_score_moves_within_a_step_change_nothing() -> None:
    assert intensity_parameters(0.51, DEFAULTS) == intensity_parameters(0.524, DEFAULTS)
    assert intensity_parameters(0.51, DEFAULTS) != intensity_parameters(0.53, DEFAULTS)
    assert len({intensity_parameters(i / 1000, DEFAULTS) for i in range(1001)}) == 21


def test_values_are_rounded_to_four_decimals() -> None:
    config = IntensityConfig(risk_pct_dry=1.0, risk_pct_wet=1.0 + 1 / 3)
    assert intensity_parameters(0.35, config).risk_pct == 1.1167


# -- the configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"risk_pct_dry": 20.0}, "risk_pct_dry"),
        ({"max_total_exposure_pct_wet": 10.0}, "max_total_exposure_pct_dry"),
        ({"max_symbol_exposure_pct_dry": 80.0}, "max_symbol_exposure_pct_dry"),
        ({"cooldown_minutes_wet": 90.0}, "cooldown_minutes_dry"),
        ({"weight_streak": 0.5}, "weight_streak"),
        ({"min_trades": 30}, "min_trades"),
        ({"score_step": 0.3}, "score_step"),
        ({"window_trades": 0}, "window_trades"),
        ({"risk_pct_wet": 0.0}, "risk_pct_wet"),
        ({"risk_pct_wet": 101.0}, "risk_pct_wet"),
        ({"cooldown_minutes_dry": -1.0}, "cooldown_minutes_dry"),
        ({"weight_drawdown": -0.1}, "weight_drawdown"),
        ({"profit_factor_cap": 0.5}, "profit_factor_cap"),
        ({"update_every_trades": 0}, "update_every_trades"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_config_errors_name_the_field(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        IntensityConfig(**overrides)


def test_equal_ends_are_allowed_and_the_config_is_frozen() -> None:
    config = IntensityConfig(risk_pct_dry=10.0, risk_pct_wet=10.0)
    assert intensity_parameters(0.0, config).risk_pct == intensity_parameters(1.0, config).risk_pct
    with pytest.raises(ValidationError, match="frozen"):
        config.enabled = True  # type: ignore[misc]


# -- the tracker --------------------------------------------------------------------------------


def feed(tracker: IntensityTracker, trades: list[ClosedTrade]) -> list[IntensityParameters | None]:
    return [tracker.on_closed_trade(t.pnl, t.return_pct) for t in trades]


def test_the_tracker_starts_neutral_and_emits_only_on_change() -> None:
    tracker = IntensityTracker(ON)
    assert tracker.parameters == NEUTRAL
    changes = feed(tracker, [win()] * 10)
    # Neutral until min_trades, then WET at once (all wins), then nothing new.
    assert changes == [None] * 4 + [WET] + [None] * 5
    assert tracker.parameters == WET and tracker.score == 1.0 and tracker.trades == 10
    changes = feed(tracker, [loss()] * 20)
    emitted = [c for c in changes if c is not None]
    assert emitted and emitted[-1] == DRY
    # Ever drier, one step after another.
    assert all(p.risk_pct > q.risk_pct for p, q in itertools.pairwise(emitted))
    assert tracker.trades == 20 and tracker.score == 0.0


def test_the_tracker_returns_what_the_pure_functions_give() -> None:
    trades = [win(), loss(), win(), win(), loss(3.0, 0.5), win(1.0, 0.1), loss(), win()] * 4
    tracker = IntensityTracker(ON)
    for i, trade in enumerate(trades):
        changed = tracker.on_closed_trade(trade.pnl, trade.return_pct)
        expected = intensity_parameters(intensity_score(trades[: i + 1], ON), ON)
        assert tracker.parameters == expected
        assert changed is None or changed == expected
        assert tracker.raw_score == intensity_score(trades[: i + 1], ON)


def test_the_tracker_recomputes_every_update_every_trades() -> None:
    tracker = IntensityTracker(IntensityConfig(enabled=True, update_every_trades=3))
    changes = feed(tracker, [win()] * 9)
    assert changes == [None] * 5 + [WET] + [None] * 3
    assert tracker.trades == 9


def test_a_disabled_tracker_records_nothing() -> None:
    tracker = IntensityTracker(DEFAULTS)
    assert feed(tracker, [loss()] * 30) == [None] * 30
    assert tracker.trades == 0 and tracker.parameters == NEUTRAL


def test_the_window_is_bounded() -> None:
    tracker = IntensityTracker(IntensityConfig(enabled=True, window_trades=7, min_trades=3))
    feed(tracker, [win()] * 100)
    assert tracker.trades == 7 and len(tracker.window) == 7


def test_a_trade_must_be_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        IntensityTracker(ON).on_closed_trade(float("nan"), 1.0)


def test_the_tracker_pickles_and_goes_on_as_the_original() -> None:
    original = IntensityTracker(IntensityConfig(enabled=True, update_every_trades=2))
    history = [win(), loss(), win(), win(), loss(), win(), win()]
    feed(original, history)
    copy = pickle.loads(pickle.dumps(original))
    assert copy.window == original.window and copy.parameters == original.parameters
    assert copy.score == original.score and copy.config == original.config
    more = [loss()] * 6 + [win()] * 6
    assert feed(copy, more) == feed(original, more)
    assert copy.window == original.window


def test_the_tracker_makes_the_event_of_its_change() -> None:
    tracker = IntensityTracker(ON)
    feed(tracker, [win()] * 3 + [loss()] * 2 + [win()] * 2)
    event = tracker.changed_event(
        event_id="run:intensity_changed:0",
        run_id="run",
        sequence=0,
        timestamp=1_700_000_000_000,
        causation_id="run:position_state:6",
    )
    assert isinstance(event, IntensityChanged)
    assert (event.score, event.trades, event.reason) == (tracker.score, 7, "TRADES_WINDOW")
    assert (
        IntensityParameters(
            event.risk_pct,
            event.max_total_exposure_pct,
            event.max_symbol_exposure_pct,
            event.cooldown_minutes,
        )
        == tracker.parameters
        == intensity_parameters(event.score, ON)
    )
    assert validate_event(event.model_dump(mode="json")) == event
