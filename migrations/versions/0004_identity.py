"""Identity: OIDC sign-ins in flight, provider subject -> user links, group -> team/role mappings.

Revision ID: 0004_identity
Revises: 0003_token_parents
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_identity"
down_revision = "0003_token_parents"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oidc_flows",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("state_digest", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("code_verifier", sa.String(length=128), nullable=False),
        sa.Column("redirect_uri", sa.String(length=512), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_flows")),
        sa.UniqueConstraint("state_digest", name=op.f("uq_oidc_flows_state_digest")),
    )
    op.create_table(
        "identity_links",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("user_id", BIGID, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("last_sign_in_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_identity_links_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_links")),
        sa.UniqueConstraint("provider", "subject", name=op.f("uq_identity_links_provider_subject")),
    )
    with op.batch_alter_table("identity_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_identity_links_user_id"), ["user_id"], unique=False)
    op.create_table(
        "group_mappings",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("group_name", sa.String(length=255), nullable=False),
        sa.Column("team_id", BIGID, nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_group_mappings_team_id_teams"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["role"], ["roles.name"], name=op.f("fk_group_mappings_role_roles")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_group_mappings")),
        sa.UniqueConstraint(
            "source", "group_name", "team_id", name=op.f("uq_group_mappings_source_group_name_team_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("group_mappings")
    with op.batch_alter_table("identity_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_links_user_id"))
    op.drop_table("identity_links")
    op.drop_table("oidc_flows")
