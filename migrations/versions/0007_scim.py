"""SCIM provisioning: the resources the IdP provisioned, kept whole, with the user each stands for.

Revision ID: 0007_scim
Revises: 0006_thinking_policy
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_scim"
down_revision = "0006_thinking_policy"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scim_resources",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=16), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("name_key", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("user_id", BIGID, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_scim_resources_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scim_resources")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_scim_resources_resource_id")),
    )
    with op.batch_alter_table("scim_resources", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scim_resources_name_key"), ["name_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_scim_resources_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("scim_resources", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scim_resources_user_id"))
        batch_op.drop_index(batch_op.f("ix_scim_resources_name_key"))
    op.drop_table("scim_resources")
