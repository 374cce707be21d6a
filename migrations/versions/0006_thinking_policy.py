"""Team policies decide on thinking mode: whether members may ask for it, and a reasoning-token cap.

Existing policies keep what they allowed: thinking is allowed (the route could not produce it before,
so no policy was written against it) and reasoning is uncapped (NULL).

Revision ID: 0006_thinking_policy
Revises: 0005_throttle_digests
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_thinking_policy"
down_revision = "0005_throttle_digests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("allow_thinking", sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column("max_reasoning_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.drop_column("max_reasoning_tokens")
        batch_op.drop_column("allow_thinking")
