"""signals and risk decisions

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "risk_decisions",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=True),
        sa.Column("symbol", sa.String(length=64), nullable=True),
        sa.Column("requested_direction", sa.String(length=8), nullable=True),
        sa.Column("approved", sa.Boolean(), nullable=True),
        sa.Column("approved_size", sa.Float(), nullable=True),
        sa.Column("requested_size", sa.Float(), nullable=True),
        sa.Column("reason_code", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "sequence"),
    )
    with op.batch_alter_table("risk_decisions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_risk_decisions_reason_code"), ["reason_code"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_risk_decisions_symbol"), ["symbol"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_risk_decisions_timestamp"), ["timestamp"], unique=False
        )

    op.create_table(
        "signals",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=True),
        sa.Column("symbol", sa.String(length=64), nullable=True),
        sa.Column("direction", sa.String(length=8), nullable=True),
        sa.Column("strength", sa.Float(), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("strategy_id", sa.String(length=64), nullable=True),
        sa.Column("price", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "sequence"),
    )
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signals_symbol"), ["symbol"], unique=False)
        batch_op.create_index(batch_op.f("ix_signals_timestamp"), ["timestamp"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("signals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signals_timestamp"))
        batch_op.drop_index(batch_op.f("ix_signals_symbol"))

    op.drop_table("signals")
    with op.batch_alter_table("risk_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_risk_decisions_timestamp"))
        batch_op.drop_index(batch_op.f("ix_risk_decisions_symbol"))
        batch_op.drop_index(batch_op.f("ix_risk_decisions_reason_code"))

    op.drop_table("risk_decisions")
