"""Operation lanes: a failover or failback, and a drill or deployment retry, each at most
one unfinished per pair; `mode` is null for the kinds that change no state

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 12:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel types)

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED = {"sqlite_where": sa.text("done = 0"), "postgresql_where": sa.text("done = false")}


def upgrade() -> None:
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "lane",
                sqlmodel.sql.sqltypes.AutoString(length=8),
                nullable=False,
                server_default="switch",
            )
        )
        batch_op.alter_column(
            "mode", existing_type=sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True
        )
        batch_op.alter_column(
            "kind",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=16),
            type_=sqlmodel.sql.sqltypes.AutoString(length=24),
            existing_nullable=False,
        )
        batch_op.drop_index("uq_operations_one_unfinished_per_cluster", **UNFINISHED)
        batch_op.create_index(
            "uq_operations_one_unfinished_per_lane",
            ["cluster_id", "lane"],
            unique=True,
            **UNFINISHED,
        )


def downgrade() -> None:
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.drop_index("uq_operations_one_unfinished_per_lane", **UNFINISHED)
        batch_op.create_index(
            "uq_operations_one_unfinished_per_cluster", ["cluster_id"], unique=True, **UNFINISHED
        )
        batch_op.alter_column(
            "kind",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=24),
            type_=sqlmodel.sql.sqltypes.AutoString(length=16),
            existing_nullable=False,
        )
        batch_op.alter_column(
            "mode", existing_type=sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False
        )
        batch_op.drop_column("lane")
