"""Plans of a pair's own, runbook secrets, recovery objectives; pair secrets; what an
action remembers between calls of a step

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 12:10:00.000000
"""

import base64
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate renders sqlmodel types)

import app.columns
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def upgrade() -> None:
    op.create_table(
        "pair_secrets",
        sa.Column("cluster_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("org_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("ciphertext", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", app.columns.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.columns.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cluster_id", "name"),
    )
    with op.batch_alter_table("pair_secrets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pair_secrets_org_id"), ["org_id"], unique=False)

    op.create_table(
        "action_progress",
        sa.Column("idempotency_key", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column("cluster_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", app.columns.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    with op.batch_alter_table("action_progress", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_action_progress_cluster_id"), ["cluster_id"], unique=False
        )

    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("plan", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("runbook_secret", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "previous_runbook_secret",
                sqlmodel.sql.sqltypes.AutoString(length=100),
                nullable=True,
            )
        )
        batch_op.add_column(
            sa.Column(
                "previous_runbook_secret_expires_at",
                app.columns.UTCDateTime(timezone=True),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("rto_target_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("rpo_target_s", sa.Float(), nullable=True))
    # Every pair registered before gets a runbook secret of its own.
    bind = op.get_bind()
    clusters = sa.table("clusters", sa.column("id"), sa.column("runbook_secret"))
    for (cluster_id,) in bind.execute(sa.select(clusters.c.id)).all():
        bind.execute(
            clusters.update()
            .where(clusters.c.id == cluster_id)
            .values(runbook_secret=_new_secret())
        )
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.alter_column(
            "runbook_secret",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=100),
            nullable=False,
        )

    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("measured_rto_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("data_loss", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.drop_column("data_loss")
        batch_op.drop_column("measured_rto_s")
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        for column in (
            "rpo_target_s",
            "rto_target_s",
            "previous_runbook_secret_expires_at",
            "previous_runbook_secret",
            "runbook_secret",
            "plan",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("action_progress", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_action_progress_cluster_id"))
    op.drop_table("action_progress")
    with op.batch_alter_table("pair_secrets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pair_secrets_org_id"))
    op.drop_table("pair_secrets")
