"""Planned starts (when a blocked workload is expected to start, the NVLink domains held for it,
the first such plan), declared checkpoint intervals, tenants' fair-share weights, and the
pending reason code "planned"

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The pending reason codes as this revision knows them (0004's, and "planned").
PENDING_CODES = (
    "submitted",
    "requeued",
    "no_such_model",
    "too_large",
    "no_gpus",
    "quota_gpus",
    "quota_gpu_hours",
    "quota_spend",
    "gpus",
    "shape",
    "nvlink_domain",
    "whole_domains",
    "nvlink_draining",
    "rack_power",
    "site_power",
    "preemption",
    "planned",
    "filtered",
)
OLD_PENDING_CODES = tuple(c for c in PENDING_CODES if c != "planned")
# The bounds the models state too (store.models.workloads): a checkpoint interval of a minute to
# a week; the held domains as a JSON array of at most 4,096 names of at most 80 characters, each
# at most 164 characters once quoted and escaped.
CHECKPOINT_RANGE = "checkpoint_interval_s IS NULL OR checkpoint_interval_s BETWEEN 60 AND 604800"
PLANNED_DOMAINS_LENGTH = "planned_domains IS NULL OR length(planned_domains) <= 671744"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expected_start_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("first_expected_start_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("planned_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("planned_domains", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("checkpoint_interval_s", sa.Integer(), nullable=True))
        batch_op.drop_constraint("reason_code_valid", type_="check")
        batch_op.create_check_constraint("reason_code_valid", _in("reason_code", PENDING_CODES))
        batch_op.create_check_constraint("checkpoint_interval_s_range", CHECKPOINT_RANGE)
        batch_op.create_check_constraint("planned_domains_length", PLANNED_DOMAINS_LENGTH)
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("share_weight", sa.Float(), nullable=False, server_default="1"))
        batch_op.create_check_constraint("share_weight_positive", "share_weight > 0")


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_constraint("share_weight_positive", type_="check")
        batch_op.drop_column("share_weight")
    # The older schema has no "planned": such work is waiting for GPUs, which it can say.
    op.execute("UPDATE workloads SET reason_code = 'gpus' WHERE reason_code = 'planned'")
    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.drop_constraint("planned_domains_length", type_="check")
        batch_op.drop_constraint("checkpoint_interval_s_range", type_="check")
        batch_op.drop_constraint("reason_code_valid", type_="check")
        batch_op.create_check_constraint("reason_code_valid", _in("reason_code", OLD_PENDING_CODES))
        batch_op.drop_column("checkpoint_interval_s")
        batch_op.drop_column("planned_domains")
        batch_op.drop_column("planned_at")
        batch_op.drop_column("first_expected_start_at")
        batch_op.drop_column("expected_start_at")
