"""Adaptive risk intensity (R12): a score between DRY and WET from the latest closed trades.

The score ``s`` lies in [0, 1]: 0 is DRY (defensive), 1 is WET (aggressive). It is computed
from the most recent ``window_trades`` closed trades (``n`` of them, oldest first, each a
``ClosedTrade(pnl, return_pct)``). A trade is a win if ``pnl > 0`` and a loss if ``pnl < 0``;
a trade with ``pnl == 0`` counts in ``n`` but is neither.

If ``n < min_trades`` the score is neutral: ``s = 0.5``. Otherwise::

    win_rate   = wins / n
    pf_norm    = min(gross_profit / gross_loss, pf_cap) / pf_cap    (gross_loss > 0)
               = 1                                                  (gross_loss = 0 < gross_profit)
               = 0                                                  (no profit at all)
    dd_norm    = max_drawdown / sum(|return_pct|)                   (0 if the sum is 0)
    streak_norm = 0.5 + 0.5 * clamp(streak / streak_cap, -1, 1)
    s = clamp(w_win * win_rate + w_pf * pf_norm + w_dd * (1 - dd_norm)
              + w_streak * streak_norm, 0, 1)

- ``gross_profit`` / ``gross_loss``: the sums of the winning ``pnl`` and of the losing
  ``|pnl|`` (the profit factor of the run statistics, over the window).
- ``max_drawdown``: the largest fall of the cumulative ``return_pct`` (a running sum that
  starts at 0 before the window's first trade) below its running peak, in percentage points.
  Dividing by the window's total absolute return makes it the share of the window's movement
  that was given back: 0 when the cumulative return only rose, 1 when it only fell (every
  trade a loss). It uses ``return_pct``, not ``pnl``, so it measures the strategy, not the
  position sizes the intensity itself chose.
- ``streak``: the current streak at the end of the window, ``+k`` after ``k`` wins in a row,
  ``-k`` after ``k`` losses in a row, 0 if the last trade was neither.
- ``pf_cap`` (``profit_factor_cap``, default 3) and ``streak_cap`` (default 5) bound what one
  component can contribute. The weights are non-negative and sum to 1.

Default weights, and why: win rate 0.30 and profit factor 0.30 carry the edge (how often,
and how much more is won than lost); drawdown 0.25 is the brake, so a window that gave back
much of what it made turns defensive even with a decent win rate; the streak 0.15 reacts
fastest to the latest trades but is the noisiest, so it nudges without dominating.
Once ``n >= min_trades`` and ``n >= streak_cap``, all wins score exactly 1, all losses exactly 0.

The dynamic parameters interpolate linearly between their DRY and WET ends
(``value = dry + q * (wet - dry)``, see ``intensity_parameters``) at the *quantised* score
``q``: ``s`` rounded to the nearest multiple of ``score_step`` (default 0.05, 21 levels; ties
to even). Each value is then rounded to ``PARAMETER_DECIMALS`` decimals, so one level always
gives bit-identical values and tiny score moves do not produce a flood of changes: the
parameters change only when the score crosses into another level.

Everything here is pure and deterministic: no I/O, clock or randomness.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.events.intensity import IntensityChanged
from domain.state import StateModel

NEUTRAL_SCORE = 0.5
PARAMETER_DECIMALS = 4
SCORE_DECIMALS = 6
# Reason codes of an ``intensity_changed`` event.
REASON_START = "START"
REASON_TRADES_WINDOW = "TRADES_WINDOW"


class ClosedTrade(NamedTuple):
    """A round trip's result: its realised P&L (after fees) and its return in percent."""

    pnl: float
    return_pct: float


class IntensityParameters(NamedTuple):
    """The risk parameters the intensity sets; they replace their static RiskConfig values."""

    risk_pct: float
    max_total_exposure_pct: float
    max_symbol_exposure_pct: float
    cooldown_minutes: float


class IntensityConfig(BaseModel):
    """Adaptive intensity: off by default; DRY and WET ends of each dynamic parameter.

    The default ends are chosen so the neutral score (0.5, e.g. before ``min_trades``
    trades) gives the static RiskConfig defaults for risk per trade (10 %) and symbol
    exposure (50 %); total exposure stays within equity even at its WET end (long-only,
    no leverage), and a DRY strategy waits an hour between entries.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    enabled: bool = False
    window_trades: int = Field(default=20, ge=1, le=1000)
    min_trades: int = Field(default=5, ge=1, le=1000)
    update_every_trades: int = Field(default=1, ge=1, le=1000)

    risk_pct_dry: float = Field(default=5.0, gt=0, le=100)
    risk_pct_wet: float = Field(default=15.0, gt=0, le=100)
    max_total_exposure_pct_dry: float = Field(default=50.0, gt=0, le=1000)
    max_total_exposure_pct_wet: float = Field(default=100.0, gt=0, le=1000)
    max_symbol_exposure_pct_dry: float = Field(default=25.0, gt=0, le=1000)
    max_symbol_exposure_pct_wet: float = Field(default=75.0, gt=0, le=1000)
    cooldown_minutes_dry: float = Field(default=60.0, ge=0, le=10_080)
    cooldown_minutes_wet: float = Field(default=0.0, ge=0, le=10_080)

    weight_win_rate: float = Field(default=0.30, ge=0, le=1)
    weight_profit_factor: float = Field(default=0.30, ge=0, le=1)
    weight_drawdown: float = Field(default=0.25, ge=0, le=1)
    weight_streak: float = Field(default=0.15, ge=0, le=1)
    profit_factor_cap: float = Field(default=3.0, ge=1, le=100)
    streak_cap: int = Field(default=5, ge=1, le=1000)
    score_step: float = Field(default=0.05, gt=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> IntensityConfig:
        if self.min_trades > self.window_trades:
            raise ValueError(
                f"min_trades ({self.min_trades}) must be <= window_trades "
                f"({self.window_trades}): the score would never leave neutral"
            )
        for name in ("risk_pct", "max_total_exposure_pct", "max_symbol_exposure_pct"):
            dry, wet = getattr(self, f"{name}_dry"), getattr(self, f"{name}_wet")
            if dry > wet:
                raise ValueError(f"{name}_dry ({dry}) must be <= {name}_wet ({wet})")
        if self.cooldown_minutes_dry < self.cooldown_minutes_wet:
            raise ValueError(
                f"cooldown_minutes_dry ({self.cooldown_minutes_dry}) must be >= "
                f"cooldown_minutes_wet ({self.cooldown_minutes_wet})"
            )
        weights = (
            self.weight_win_rate,
            self.weight_profit_factor,
            self.weight_drawdown,
            self.weight_streak,
        )
        if not math.isclose(math.fsum(weights), 1.0, abs_tol=1e-9):
            raise ValueError(
                "weight_win_rate + weight_profit_factor + weight_drawdown + weight_streak "
                f"must sum to 1, not {math.fsum(weights)}"
            )
        levels = 1.0 / self.score_step
        if not math.isclose(levels, round(levels), abs_tol=1e-9):
            raise ValueError(f"score_step ({self.score_step}) must divide 1 (e.g. 0.05, 0.1)")
        return self


def _clamp(value: float, low: float, high: float) -> float:
    # min(high, max(low, value)), which it replaces bit for bit (which of two equal values
    # comes back included), without two calls of builtins on every closed trade.
    value = value if value > low else low
    return value if value < high else high


def intensity_score(trades: Sequence[ClosedTrade], config: IntensityConfig) -> float:
    """The score of the last ``config.window_trades`` of ``trades`` (oldest first), in
    [0, 1]; see the module docstring for the formula. One pass over the window."""
    window = trades[-config.window_trades :] if len(trades) > config.window_trades else trades
    return _score(window, config)


def _score(window: Iterable[ClosedTrade], config: IntensityConfig) -> float:
    n = wins = streak = 0
    gross_profit = gross_loss = 0.0
    cumulative = peak = max_drawdown = moved = 0.0
    for pnl, return_pct in window:
        n += 1
        if pnl > 0.0:
            wins += 1
            gross_profit += pnl
            streak = streak + 1 if streak > 0 else 1
        elif pnl < 0.0:
            gross_loss -= pnl
            streak = streak - 1 if streak < 0 else -1
        else:
            streak = 0
        cumulative += return_pct
        moved += abs(return_pct)
        # Two max() calls, spelt out for this loop that runs on every closed trade: a new
        # peak is no fall (max_drawdown >= 0), below it the fall may be the largest.
        if cumulative > peak:
            peak = cumulative
        elif peak - cumulative > max_drawdown:
            max_drawdown = peak - cumulative
    if n < config.min_trades:
        return NEUTRAL_SCORE
    win_rate = wins / n
    if gross_loss > 0.0:
        pf_norm = (
            min(gross_profit / gross_loss, config.profit_factor_cap) / config.profit_factor_cap
        )
    else:
        pf_norm = 1.0 if gross_profit > 0.0 else 0.0
    dd_norm = _clamp(max_drawdown / moved, 0.0, 1.0) if moved > 0.0 else 0.0
    streak_norm = 0.5 + 0.5 * _clamp(streak / config.streak_cap, -1.0, 1.0)
    score = (
        config.weight_win_rate * win_rate
        + config.weight_profit_factor * pf_norm
        + config.weight_drawdown * (1.0 - dd_norm)
        + config.weight_streak * streak_norm
    )
    return _clamp(score, 0.0, 1.0)


def quantised_score(score: float, config: IntensityConfig) -> float:
    """``score`` clamped to [0, 1] and rounded to the nearest multiple of ``score_step``."""
    step = config.score_step
    level = round(_clamp(score, 0.0, 1.0) / step)
    return round(_clamp(level * step, 0.0, 1.0), SCORE_DECIMALS)


def intensity_parameters(score: float, config: IntensityConfig) -> IntensityParameters:
    """The parameters at ``score``: quantised (``quantised_score``), then each interpolated
    linearly from its DRY end (score 0) to its WET end (score 1) and rounded to
    ``PARAMETER_DECIMALS`` decimals. Always within [dry, wet] (or [wet, dry] for cooldown)."""
    q = quantised_score(score, config)
    return IntensityParameters(
        _between(q, config.risk_pct_dry, config.risk_pct_wet),
        _between(q, config.max_total_exposure_pct_dry, config.max_total_exposure_pct_wet),
        _between(q, config.max_symbol_exposure_pct_dry, config.max_symbol_exposure_pct_wet),
        _between(q, config.cooldown_minutes_dry, config.cooldown_minutes_wet),
    )


def _between(q: float, dry: float, wet: float) -> float:
    """The value at quantised score ``q`` from ``dry`` to ``wet``, rounded, kept within them."""
    value = round(dry + q * (wet - dry), PARAMETER_DECIMALS)
    return _clamp(value, min(dry, wet), max(dry, wet))


class IntensityState(StateModel):
    """What ``IntensityTracker`` folded; its configuration comes from the run's."""

    window: list[ClosedTrade]  # oldest first
    since_update: int
    raw_score: float
    score: float
    parameters: IntensityParameters


class IntensityTracker:
    """The window of closed trades and the parameters in force, folded trade by trade.

    ``on_closed_trade`` recomputes the score every ``update_every_trades`` closed trades
    (O(window) each time) and returns the new parameters only when they differ from those
    in force, else None; each return is meant to become one ``intensity_changed`` event
    (``changed_event``). It starts at the neutral score's parameters. A disabled config's
    tracker records nothing and never returns parameters. Its state (``state``) is part
    of engine snapshots.
    """

    __slots__ = ("_parameters", "_raw_score", "_score", "_since_update", "_window", "config")

    def __init__(self, config: IntensityConfig) -> None:
        self.config = config
        self._window: deque[ClosedTrade] = deque(maxlen=config.window_trades)
        self._since_update = 0
        self._raw_score = NEUTRAL_SCORE
        self._score = quantised_score(NEUTRAL_SCORE, config)
        self._parameters = intensity_parameters(NEUTRAL_SCORE, config)

    def state(self) -> IntensityState:
        return IntensityState(
            window=list(self._window),
            since_update=self._since_update,
            raw_score=self._raw_score,
            score=self._score,
            parameters=self._parameters,
        )

    def restore(self, state: IntensityState) -> None:
        """Take ``state`` (what ``state()`` gave, of a tracker of the same configuration)."""
        if len(state.window) > self.config.window_trades:
            raise ValueError(
                f"{len(state.window)} trades in a window of {self.config.window_trades}"
            )
        self._window = deque(state.window, maxlen=self.config.window_trades)
        self._since_update = state.since_update
        self._raw_score = state.raw_score
        self._score = state.score
        self._parameters = state.parameters

    @property
    def parameters(self) -> IntensityParameters:
        """The parameters in force."""
        return self._parameters

    @property
    def score(self) -> float:
        """The quantised score of the last recomputation: the parameters' score."""
        return self._score

    @property
    def raw_score(self) -> float:
        """The score of the last recomputation, before quantisation."""
        return self._raw_score

    @property
    def trades(self) -> int:
        """Closed trades in the window."""
        return len(self._window)

    @property
    def window(self) -> tuple[ClosedTrade, ...]:
        return tuple(self._window)

    def on_closed_trade(self, pnl: float, return_pct: float) -> IntensityParameters | None:
        if not self.config.enabled:
            return None
        if not (math.isfinite(pnl) and math.isfinite(return_pct)):
            raise ValueError(f"a closed trade needs finite pnl and return_pct: {pnl}, {return_pct}")
        self._window.append(ClosedTrade(pnl, return_pct))
        self._since_update += 1
        if self._since_update < self.config.update_every_trades:
            return None
        self._since_update = 0
        self._raw_score = _score(self._window, self.config)
        score = quantised_score(self._raw_score, self.config)
        # Most trades leave the score on its level, and the parameters in force are those
        # of the level in force (or of the neutral score it was quantised from, at the
        # start); where quantising the level again keeps it, they are this level's too.
        same_level = score == self._score and quantised_score(score, self.config) == score
        self._score = score
        if same_level:
            return None
        parameters = intensity_parameters(score, self.config)
        if parameters == self._parameters:
            return None
        self._parameters = parameters
        return parameters

    def changed_fields(self, reason: str = REASON_TRADES_WINDOW) -> dict[str, Any]:
        """The payload of the ``intensity_changed`` event of the parameters (and score) in
        force; the envelope is the caller's."""
        return {
            "score": self._score,
            **self._parameters._asdict(),
            "trades": self.trades,
            "reason": reason,
        }

    def changed_event(
        self,
        *,
        event_id: str,
        run_id: str,
        sequence: int,
        timestamp: int,
        causation_id: str | None,
        reason: str = REASON_TRADES_WINDOW,
    ) -> IntensityChanged:
        """The ``intensity_changed`` event of the parameters (and score) in force."""
        return IntensityChanged(
            event_id=event_id,
            run_id=run_id,
            sequence=sequence,
            timestamp=timestamp,
            causation_id=causation_id,
            **self.changed_fields(reason),
        )
