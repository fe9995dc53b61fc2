"""Metering: GPU energy-counter readings and the append-only usage ledger

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "energy_readings",
        sa.Column("gpu_id", sa.String(length=40), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("energy_mj", sa.BigInteger(), nullable=True),
        sa.Column("power_mw", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("energy_mj IS NULL OR energy_mj >= 0", name=op.f("ck_energy_readings_energy_mj_range")),
        sa.CheckConstraint("power_mw IS NULL OR power_mw >= 0", name=op.f("ck_energy_readings_power_mw_range")),
        sa.ForeignKeyConstraint(
            ["gpu_id"], ["gpus.id"], name=op.f("fk_energy_readings_gpu_id_gpus"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("gpu_id", "at_us", name=op.f("pk_energy_readings")),
    )
    op.create_table(
        "usage_records",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("workload_id", sa.String(length=40), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("gpu_model", sa.String(length=96), nullable=False),
        sa.Column("allocation_id", sa.BigInteger(), nullable=False),
        sa.Column("gpu_id", sa.String(length=40), nullable=False),
        sa.Column("start_us", sa.BigInteger(), nullable=False),
        sa.Column("end_us", sa.BigInteger(), nullable=False),
        sa.Column("gpu_us", sa.BigInteger(), nullable=False),
        sa.Column("it_mj", sa.BigInteger(), nullable=False),
        sa.Column("facility_mj", sa.BigInteger(), nullable=False),
        sa.Column("estimated", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("end_us > start_us", name=op.f("ck_usage_records_interval_order")),
        sa.CheckConstraint("gpu_us >= 0 AND gpu_us <= end_us - start_us", name=op.f("ck_usage_records_gpu_us_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
        sa.UniqueConstraint("key", name=op.f("uq_usage_records_key")),
    )
    op.create_index("ix_usage_records_tenant_start", "usage_records", ["tenant_id", "start_us"])
    op.create_index("ix_usage_records_allocation", "usage_records", ["allocation_id"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_allocation", table_name="usage_records")
    op.drop_index("ix_usage_records_tenant_start", table_name="usage_records")
    op.drop_table("usage_records")
    op.drop_table("energy_readings")
