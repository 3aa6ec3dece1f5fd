"""projected_runs: which runs each projector (each log) has folded

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projected_runs",
        sa.Column("projector", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("projector", "run_id"),
    )
    # A store that only one projector has written to (one log, the common case) holds that
    # log's runs only: they are its. With several, which run came from which log is not
    # recorded yet; a rebuild then goes by the runs its log holds.
    op.execute(
        "INSERT INTO projected_runs (projector, run_id) "
        "SELECT (SELECT min(projector) FROM projector_checkpoints), run_id FROM runs "
        "WHERE (SELECT count(DISTINCT projector) FROM projector_checkpoints) = 1"
    )


def downgrade() -> None:
    op.drop_table("projected_runs")
