"""GPU health action and the append-only GPU event history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gpus", schema=None) as batch_op:
        batch_op.add_column(sa.Column("health_action", sa.String(length=24), nullable=False, server_default="none"))
    op.create_table(
        "gpu_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gpu_id", sa.String(length=40), nullable=False),
        sa.Column("node_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("xid", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["gpu_id"], ["gpus.id"], name=op.f("fk_gpu_events_gpu_id_gpus"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_gpu_events_node_id_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gpu_events")),
    )
    with op.batch_alter_table("gpu_events", schema=None) as batch_op:
        batch_op.create_index("ix_gpu_events_gpu_at", ["gpu_id", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_gpu_events_node_id"), ["node_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("gpu_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gpu_events_node_id"))
        batch_op.drop_index("ix_gpu_events_gpu_at")
    op.drop_table("gpu_events")
    with op.batch_alter_table("gpus", schema=None) as batch_op:
        batch_op.drop_column("health_action")
