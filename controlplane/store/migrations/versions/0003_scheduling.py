"""Tenant reservations and quotas, preemption records, the mining budget, the scheduler fence

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reserved_gpus", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("max_gpus", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("gpu_hours_limit", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("spend_cap_usd", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("over_quota", sa.String(length=8), nullable=False, server_default="hold"))
        batch_op.add_column(sa.Column("price_usd_per_gpu_hour", sa.Float(), nullable=False, server_default="3.0"))
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mining_planned_w", sa.Float(), nullable=False, server_default="0"))
    op.create_table(
        "preemptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("victim_id", sa.String(length=40), nullable=False),
        sa.Column("for_workload_id", sa.String(length=40), nullable=False),
        sa.Column("victim_priority", sa.String(length=16), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("grace_s", sa.Float(), nullable=False),
        sa.Column("noticed_at", sa.DateTime(), nullable=False),
        sa.Column("released_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["victim_id"], ["workloads.id"], name=op.f("fk_preemptions_victim_id_workloads"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["for_workload_id"],
            ["workloads.id"],
            name=op.f("fk_preemptions_for_workload_id_workloads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preemptions")),
    )
    with op.batch_alter_table("preemptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_preemptions_victim_id"), ["victim_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_preemptions_for_workload_id"), ["for_workload_id"], unique=False)
    op.create_table(
        "mining_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.String(length=40), nullable=False),
        sa.Column("delta_w", sa.Float(), nullable=False),
        sa.Column("planned_w", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_mining_events_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mining_events")),
    )
    with op.batch_alter_table("mining_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mining_events_site_id"), ["site_id"], unique=False)
    op.create_table(
        "scheduler_fence",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_fence")),
    )
    op.execute("INSERT INTO scheduler_fence (id, epoch) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("scheduler_fence")
    with op.batch_alter_table("mining_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mining_events_site_id"))
    op.drop_table("mining_events")
    with op.batch_alter_table("preemptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_preemptions_for_workload_id"))
        batch_op.drop_index(batch_op.f("ix_preemptions_victim_id"))
    op.drop_table("preemptions")
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("mining_planned_w")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        for column in (
            "price_usd_per_gpu_hour",
            "over_quota",
            "spend_cap_usd",
            "gpu_hours_limit",
            "max_gpus",
            "reserved_gpus",
        ):
            batch_op.drop_column(column)
