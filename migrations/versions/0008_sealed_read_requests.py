"""Two-person reads of sealed content: an auditor's read request and a second auditor's approval.

Revision ID: 0008_sealed_read_requests
Revises: 0007_scim
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_sealed_read_requests"
down_revision = "0007_scim"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sealed_read_requests",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("ref", sa.String(length=36), nullable=False),
        sa.Column("requester_id", BIGID, nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("approver_id", BIGID, nullable=True),
        sa.Column("approved_at", UTC, nullable=True),
        sa.Column("used_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["requester_id"],
            ["users.id"],
            name=op.f("fk_sealed_read_requests_requester_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["approver_id"],
            ["users.id"],
            name=op.f("fk_sealed_read_requests_approver_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sealed_read_requests")),
    )
    with op.batch_alter_table("sealed_read_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sealed_read_requests_ref"), ["ref"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sealed_read_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sealed_read_requests_ref"))
    op.drop_table("sealed_read_requests")
