"""The usage ledger summed per tenant, hour, class and GPU model

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_hourly",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("hour_us", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("gpu_model", sa.String(length=96), nullable=False),
        sa.Column("gpu_us", sa.BigInteger(), nullable=False),
        sa.Column("it_mj", sa.BigInteger(), nullable=False),
        sa.Column("facility_mj", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("estimated_rows", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "hour_us", "priority", "gpu_model", name=op.f("pk_usage_hourly")),
    )
    # What the ledger holds already, summed (nothing on a new database).
    op.execute(
        "INSERT INTO usage_hourly (tenant_id, hour_us, priority, gpu_model, gpu_us, it_mj, facility_mj, rows, "
        "estimated_rows) SELECT tenant_id, start_us - start_us % 3600000000, priority, gpu_model, SUM(gpu_us), "
        "SUM(it_mj), SUM(facility_mj), COUNT(*), SUM(CASE WHEN estimated THEN 1 ELSE 0 END) FROM usage_records "
        "GROUP BY tenant_id, start_us - start_us % 3600000000, priority, gpu_model"
    )


def downgrade() -> None:
    op.drop_table("usage_hourly")
