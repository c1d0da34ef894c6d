"""Deployment results: each deployment's last validation

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel types)

import app.columns
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployment_results",
        sa.Column("cluster_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("region", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("critical", sa.Boolean(), nullable=False),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column("operation_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("failed_tasks", sa.JSON(), nullable=True),
        sa.Column("checked_at", app.columns.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cluster_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("deployment_results")
