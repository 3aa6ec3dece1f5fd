"""The read-model schema. Every table is a fold of the log and can be rebuilt from it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("strategy_id", String(64)),
    Column("code_version", String(128)),
    Column("config_json", Text),
    Column("config_hash", String(64)),
    Column("data_sources_json", Text),
    Column("seed", BigInteger),
    Column("started_at", BigInteger),
    Column("ended_at", BigInteger),
    Column("status", String(16)),
    Column("candles", BigInteger),
    Column("signals", BigInteger),
    Column("orders", BigInteger),
    Column("fills", BigInteger),
    Column("rejected", BigInteger),
    Column("dead_letters", BigInteger),
    Column("initial_cash", Float),
    Column("final_equity", Float),
    Column("total_return_pct", Float),
    Column("cagr_pct", Float),
    Column("max_drawdown_pct", Float),
    Column("sharpe", Float),
    Column("sortino", Float),
    Column("win_rate", Float),
    Column("profit_factor", Float),
    Column("expectancy", Float),
    Column("trades", BigInteger),
    Column("exposure_time_pct", Float),
    Column("bars", BigInteger),
)

signals = Table(
    "signals",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("timestamp", BigInteger, index=True),
    Column("symbol", String(64), index=True),
    Column("direction", String(8)),
    Column("strength", Float),
    Column("reason", String(64)),
    Column("strategy_id", String(64)),
    Column("price", Float),
)

risk_decisions = Table(
    "risk_decisions",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("timestamp", BigInteger, index=True),
    Column("symbol", String(64), index=True),
    Column("requested_direction", String(8)),
    Column("approved", Boolean),
    Column("approved_size", Float),
    Column("requested_size", Float),
    Column("reason_code", String(64), index=True),
)

orders = Table(
    "orders",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("order_id", String(160), primary_key=True),
    Column("symbol", String(64), index=True),
    Column("side", String(4)),
    Column("quantity", Float),
    Column("created_at", BigInteger),
    Column("status", String(16)),
    Column("filled_quantity", Float),
    Column("price", Float),
    Column("fee", Float),
    Column("reason", String(64)),
    Column("resulted_at", BigInteger),
)

trades = Table(
    "trades",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("order_id", String(160), primary_key=True),
    Column("symbol", String(64), index=True),
    Column("side", String(4)),
    Column("quantity", Float),
    Column("price", Float),
    Column("fee", Float),
    Column("timestamp", BigInteger, index=True),
    Column("realized_pnl", Float),
    Column("position_after", Float),
)

candles = Table(
    "candles",
    metadata,
    # Keyed the way a chart reads them: a run's candles of one symbol and interval, in
    # time order. The key is the only index, so a million rows cost one tree to write.
    Column("run_id", String(128), primary_key=True),
    Column("symbol", String(64), primary_key=True),
    Column("interval", String(8), primary_key=True),
    Column("timestamp", BigInteger, primary_key=True),
    Column("sequence", BigInteger),
    Column("open", Float),
    Column("high", Float),
    Column("low", Float),
    Column("close", Float),
    Column("volume", Float),
    # On SQLite the rows live in the primary-key tree itself, not in a rowid tree beside it.
    sqlite_with_rowid=False,
)

equity_curve = Table(
    "equity_curve",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("timestamp", BigInteger, index=True),
    Column("equity", Float),
    Column("cash", Float),
    Column("high_water_mark", Float),
    Column("drawdown_pct", Float),
    Column("exposure_pct", Float),
    Column("realized_pnl", Float),
    Column("open_positions", Integer),
)

positions = Table(
    "positions",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("symbol", String(64), primary_key=True),
    Column("quantity", Float),
    Column("avg_entry_price", Float),
    Column("realized_pnl", Float),
    Column("last_price", Float),
    Column("updated_at", BigInteger),
)

alerts = Table(
    "alerts",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("timestamp", BigInteger, index=True),
    Column("level", String(16)),
    Column("code", String(64)),
    Column("message", Text),
    Column("symbol", String(64)),
)

risk_states = Table(
    "risk_states",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("timestamp", BigInteger),
    Column("trading_state", String(16)),
    Column("kill_switch", Boolean),
    Column("drawdown_pct", Float),
    Column("exposure_pct", Float),
    Column("reason_code", String(64)),
)

# The adaptive intensity's parameters, one row per change (intensity_changed events).
risk_parameters = Table(
    "risk_parameters",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("timestamp", BigInteger),
    Column("score", Float),
    Column("risk_pct", Float),
    Column("max_total_exposure_pct", Float),
    Column("max_symbol_exposure_pct", Float),
    Column("cooldown_minutes", Float),
    Column("trades", Integer),
    Column("reason", String(64)),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("source", String(255)),
    Column("line", BigInteger),
    Column("raw", Text),
    Column("reason", String(64)),
)

# Not a read model: where each projector has got to, written in the same transaction as
# the rows it produced.
checkpoints = Table(
    "projector_checkpoints",
    metadata,
    Column("projector", String(128), primary_key=True),
    Column("topic", String(128), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

# Not a read model either: the runs each projector has folded the metadata of, written in
# the same transaction as the run's row. A rebuild of one log replaces the rows of these
# runs (and of every run its log holds) and keeps every other log's.
projected_runs = Table(
    "projected_runs",
    metadata,
    Column("projector", String(128), primary_key=True),
    Column("run_id", String(128), primary_key=True),
)

# Records a projector could not use (not JSON, not a known event, failing validation),
# kept with the raw payload and the reason instead of stopping the projector. Positions
# differ between logs, so like the checkpoints it is not part of the projection digest.
projection_dead_letters = Table(
    "projection_dead_letters",
    metadata,
    Column("projector", String(128), primary_key=True),
    Column("topic", String(128), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("reason", Text),
    Column("raw", Text),
)

READ_MODELS: tuple[Table, ...] = (
    alerts,
    candles,
    dead_letters,
    equity_curve,
    orders,
    positions,
    risk_decisions,
    risk_parameters,
    risk_states,
    runs,
    signals,
    trades,
)
