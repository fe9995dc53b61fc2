"""Money as exact decimals, CHECK constraints on every enumerated column, pending reason codes,
nodes' protocol and agent versions, the leader fence per role

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from controlplane.store.types import Money

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The values as this revision knows them (later revisions that add values change the constraints).
WORKLOAD_STATES = ("pending", "scheduled", "starting", "running", "succeeded", "failed", "cancelled", "preempted")
PRIORITIES = ("reserved", "on_demand", "spot", "mining")
NVLINK = ("required", "preferred", "none")
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
    "filtered",
)
NODE_STATUSES = ("ready", "unreachable")
GPU_HEALTH = ("healthy", "degraded", "unhealthy")
HEALTH_ACTIONS = ("none", "notify_tenant", "reset_gpu", "drain_node", "reboot_node", "drain_nvlink_peers")
OVER_QUOTA = ("reject", "hold")
KEY_SCOPES = ("tenant", "operator", "agent")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.alter_column(
            "spend_cap_usd",
            existing_type=sa.Float(),
            type_=Money(),
            existing_nullable=True,
            postgresql_using="spend_cap_usd::numeric(18, 6)",
        )
        batch_op.alter_column(
            "price_usd_per_gpu_hour",
            existing_type=sa.Float(),
            type_=Money(),
            existing_nullable=False,
            server_default="3.00",
            postgresql_using="price_usd_per_gpu_hour::numeric(18, 6)",
        )
        batch_op.create_check_constraint("over_quota_valid", _in("over_quota", OVER_QUOTA))
    if not pg:
        # SQLite keeps the copied REAL's text ("3.0"): fine for Decimal, but say it as money.
        op.execute("UPDATE tenants SET price_usd_per_gpu_hour = CAST(price_usd_per_gpu_hour AS TEXT)")
    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason_code", sa.String(length=24), nullable=True))
        batch_op.create_check_constraint("state_valid", _in("state", WORKLOAD_STATES))
        batch_op.create_check_constraint("priority_valid", _in("priority", PRIORITIES))
        batch_op.create_check_constraint("nvlink_valid", _in("nvlink", NVLINK))
        batch_op.create_check_constraint("reason_code_valid", _in("reason_code", PENDING_CODES))
    # Pending work keeps its words; the next scheduling pass gives it its code.
    op.execute("UPDATE workloads SET reason_code = 'submitted' WHERE state = 'pending'")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("protocol_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("agent_version", sa.String(length=64), nullable=True))
        batch_op.create_check_constraint("status_valid", _in("status", NODE_STATUSES))
    with op.batch_alter_table("gpus", schema=None) as batch_op:
        batch_op.create_check_constraint("health_valid", _in("health", GPU_HEALTH))
        batch_op.create_check_constraint("health_action_valid", _in("health_action", HEALTH_ACTIONS))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_check_constraint("scope_valid", _in("scope", KEY_SCOPES))
    op.create_table(
        "leader_fences",
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("role", name=op.f("pk_leader_fences")),
    )
    op.execute("INSERT INTO leader_fences (role, epoch) SELECT 'scheduler', epoch FROM scheduler_fence WHERE id = 1")
    op.drop_table("scheduler_fence")


def downgrade() -> None:
    op.create_table(
        "scheduler_fence",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduler_fence")),
    )
    op.execute("INSERT INTO scheduler_fence (id, epoch) SELECT 1, epoch FROM leader_fences WHERE role = 'scheduler'")
    op.drop_table("leader_fences")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint("scope_valid", type_="check")
    with op.batch_alter_table("gpus", schema=None) as batch_op:
        batch_op.drop_constraint("health_action_valid", type_="check")
        batch_op.drop_constraint("health_valid", type_="check")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_constraint("status_valid", type_="check")
        batch_op.drop_column("agent_version")
        batch_op.drop_column("protocol_version")
    with op.batch_alter_table("workloads", schema=None) as batch_op:
        for name in ("reason_code_valid", "nvlink_valid", "priority_valid", "state_valid"):
            batch_op.drop_constraint(name, type_="check")
        batch_op.drop_column("reason_code")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_constraint("over_quota_valid", type_="check")
        batch_op.alter_column(
            "price_usd_per_gpu_hour",
            existing_type=Money(),
            type_=sa.Float(),
            existing_nullable=False,
            server_default="3.0",
            postgresql_using="price_usd_per_gpu_hour::double precision",
        )
        batch_op.alter_column(
            "spend_cap_usd",
            existing_type=Money(),
            type_=sa.Float(),
            existing_nullable=True,
            postgresql_using="spend_cap_usd::double precision",
        )
