"""Readiness kept on the pair: the last evaluation and when it was made

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 12:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

import app.columns
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("readiness", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("readiness_checked_at", app.columns.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_clusters_readiness_checked_at"), ["readiness_checked_at"], unique=False
        )
    # A pair without a plan of its own holds SQL NULL, not the JSON null, from now on.
    text = "plan::text" if op.get_bind().dialect.name == "postgresql" else "plan"
    op.execute(f"UPDATE clusters SET plan = NULL WHERE {text} = 'null'")


def downgrade() -> None:
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clusters_readiness_checked_at"))
        batch_op.drop_column("readiness_checked_at")
        batch_op.drop_column("readiness")
