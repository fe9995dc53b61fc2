"""The append-only audit log, the addresses each credential was used from, revocable and
recognisable join tokens, rotated keys' successors

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ACTOR_KINDS = ("operator", "tenant", "agent", "bootstrap", "cli", "system")

# The database refuses to change or remove an entry, whoever asks (the code has no such path).
PG_APPEND_ONLY = [
    """
    CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit log is append-only: % refused', TG_OP USING ERRCODE = 'restrict_violation';
    END
    $$
    """,
    """
    CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
    """,
    """
    CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()
    """,
]
SQLITE_APPEND_ONLY = [
    """
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE refused'); END
    """,
    """
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: DELETE refused'); END
    """,
]


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_kind", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            f"actor_kind IN ({', '.join(repr(k) for k in ACTOR_KINDS)})", name=op.f("ck_audit_log_actor_kind_valid")
        ),
        sa.CheckConstraint("length(action) BETWEEN 3 AND 64", name=op.f("ck_audit_log_action_length")),
        sa.CheckConstraint("length(actor_id) BETWEEN 1 AND 64", name=op.f("ck_audit_log_actor_id_length")),
        sa.CheckConstraint(
            "request_id IS NULL OR length(request_id) BETWEEN 1 AND 128", name=op.f("ck_audit_log_request_id_length")
        ),
        sa.CheckConstraint(
            "address IS NULL OR length(address) BETWEEN 1 AND 64", name=op.f("ck_audit_log_address_length")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_action_id", ["action", "id"], unique=False)
        batch_op.create_index("ix_audit_log_actor_id_id", ["actor_id", "id"], unique=False)
        batch_op.create_index("ix_audit_log_at", ["at"], unique=False)
        batch_op.create_index("ix_audit_log_tenant_id_id", ["tenant_id", "id"], unique=False)
    for statement in PG_APPEND_ONLY if pg else SQLITE_APPEND_ONLY:
        op.execute(statement)

    op.create_table(
        "credential_addresses",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_credential_addresses_key_id_api_keys"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key_id", "address", name=op.f("pk_credential_addresses")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replaced_by_id", sa.String(length=40), nullable=True))
    with op.batch_alter_table("bootstrap_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display_prefix", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    # The older schema cannot say "revoked": a revoked, unused join token becomes a used one, so a
    # downgrade never brings it back to life.
    op.execute("UPDATE bootstrap_tokens SET used_at = revoked_at WHERE revoked_at IS NOT NULL AND used_at IS NULL")
    with op.batch_alter_table("bootstrap_tokens", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("display_prefix")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("replaced_by_id")
    op.drop_table("credential_addresses")
    # Dropping the table fires no row trigger (and drops its triggers with it).
    op.drop_table("audit_log")
    if pg:
        op.execute("DROP FUNCTION audit_log_append_only()")
