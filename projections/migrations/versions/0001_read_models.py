"""read models

Revision ID: 0001
Revises: (none: the first schema)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("symbol", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "sequence"),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alerts_timestamp"), ["timestamp"], unique=False)

    op.create_table(
        "dead_letters",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.Column("line", sa.BigInteger(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "sequence"),
    )
    op.create_table(
        "equity_curve",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=True),
        sa.Column("equity", sa.Float(), nullable=True),
        sa.Column("cash", sa.Float(), nullable=True),
        sa.Column("high_water_mark", sa.Float(), nullable=True),
        sa.Column("drawdown_pct", sa.Float(), nullable=True),
        sa.Column("exposure_pct", sa.Float(), nullable=True),
        sa.Column("realized_pnl", sa.Float(), nullable=True),
        sa.Column("open_positions", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "sequence"),
    )
    with op.batch_alter_table("equity_curve", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_equity_curve_timestamp"), ["timestamp"], unique=False)

    op.create_table(
        "orders",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("order_id", sa.String(length=160), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=True),
        sa.Column("side", sa.String(length=4), nullable=True),
        sa.Column("quantity", sa.Float(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("filled_quantity", sa.Float(), nullable=True),
        sa.Column("price", sa.Float(), nullable=True),
        sa.Column("fee", sa.Float(), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("resulted_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "order_id"),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_orders_symbol"), ["symbol"], unique=False)

    op.create_table(
        "positions",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Float(), nullable=True),
        sa.Column("avg_entry_price", sa.Float(), nullable=True),
        sa.Column("realized_pnl", sa.Float(), nullable=True),
        sa.Column("last_price", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "symbol"),
    )
    op.create_table(
        "projection_dead_letters",
        sa.Column("projector", sa.String(length=128), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("projector", "topic", "partition", "offset"),
    )
    op.create_table(
        "projector_checkpoints",
        sa.Column("projector", sa.String(length=128), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("projector", "topic", "partition"),
    )
    op.create_table(
        "risk_states",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=True),
        sa.Column("trading_state", sa.String(length=16), nullable=True),
        sa.Column("kill_switch", sa.Boolean(), nullable=True),
        sa.Column("drawdown_pct", sa.Float(), nullable=True),
        sa.Column("exposure_pct", sa.Float(), nullable=True),
        sa.Column("reason_code", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "sequence"),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("strategy_id", sa.String(length=64), nullable=True),
        sa.Column("code_version", sa.String(length=128), nullable=True),
        sa.Column("config_json", sa.Text(), nullable=True),
        sa.Column("config_hash", sa.String(length=64), nullable=True),
        sa.Column("data_sources_json", sa.Text(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("candles", sa.BigInteger(), nullable=True),
        sa.Column("signals", sa.BigInteger(), nullable=True),
        sa.Column("orders", sa.BigInteger(), nullable=True),
        sa.Column("fills", sa.BigInteger(), nullable=True),
        sa.Column("rejected", sa.BigInteger(), nullable=True),
        sa.Column("dead_letters", sa.BigInteger(), nullable=True),
        sa.Column("initial_cash", sa.Float(), nullable=True),
        sa.Column("final_equity", sa.Float(), nullable=True),
        sa.Column("total_return_pct", sa.Float(), nullable=True),
        sa.Column("cagr_pct", sa.Float(), nullable=True),
        sa.Column("max_drawdown_pct", sa.Float(), nullable=True),
        sa.Column("sharpe", sa.Float(), nullable=True),
        sa.Column("sortino", sa.Float(), nullable=True),
        sa.Column("win_rate", sa.Float(), nullable=True),
        sa.Column("profit_factor", sa.Float(), nullable=True),
        sa.Column("expectancy", sa.Float(), nullable=True),
        sa.Column("trades", sa.BigInteger(), nullable=True),
        sa.Column("exposure_time_pct", sa.Float(), nullable=True),
        sa.Column("bars", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_table(
        "trades",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("order_id", sa.String(length=160), nullable=False),
        sa.Column("symbol", sa.String(length=64), nullable=True),
        sa.Column("side", sa.String(length=4), nullable=True),
        sa.Column("quantity", sa.Float(), nullable=True),
        sa.Column("price", sa.Float(), nullable=True),
        sa.Column("fee", sa.Float(), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=True),
        sa.Column("realized_pnl", sa.Float(), nullable=True),
        sa.Column("position_after", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "order_id"),
    )
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trades_symbol"), ["symbol"], unique=False)
        batch_op.create_index(batch_op.f("ix_trades_timestamp"), ["timestamp"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trades_timestamp"))
        batch_op.drop_index(batch_op.f("ix_trades_symbol"))

    op.drop_table("trades")
    op.drop_table("runs")
    op.drop_table("risk_states")
    op.drop_table("projector_checkpoints")
    op.drop_table("projection_dead_letters")
    op.drop_table("positions")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_symbol"))

    op.drop_table("orders")
    with op.batch_alter_table("equity_curve", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_equity_curve_timestamp"))

    op.drop_table("equity_curve")
    op.drop_table("dead_letters")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_timestamp"))

    op.drop_table("alerts")
