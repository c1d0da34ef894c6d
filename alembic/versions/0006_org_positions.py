"""Per-organization event positions (the feed's and the stream's cursor); idempotency
records remember their pair, so deleting the pair forgets its keys

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 11:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel types)

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("event_position", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("org_position", sa.BigInteger(), nullable=True))

    # Number the events each organization already has, in their global order.
    op.execute(
        "UPDATE events SET org_position = numbered.n FROM (SELECT id, ROW_NUMBER() OVER"
        " (PARTITION BY org_id ORDER BY position) AS n FROM events) AS numbered"
        " WHERE events.id = numbered.id"
    )
    op.execute(
        "UPDATE organizations SET event_position = COALESCE((SELECT MAX(org_position)"
        " FROM events WHERE events.org_id = organizations.id), 0)"
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.alter_column("org_position", existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_unique_constraint("uq_events_org_position", ["org_id", "org_position"])

    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cluster_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_idempotency_records_cluster_id"), ["cluster_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_records_cluster_id"))
        batch_op.drop_column("cluster_id")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_events_org_position", type_="unique")
        batch_op.drop_column("org_position")
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("event_position")
