"""Login throttle keys become keyed digests: the counters stored under clear-text names go.

``login_throttle.key`` held the user name as typed (often a password typed in the wrong field) and
the client address. It now holds HMAC digests under a key derived from the audit HMAC key, which a
migration does not hold, so the old rows cannot be converted: they are deleted, and with them the
clear text. The cost is one reset of every failed-login counter at upgrade (as an admin's unlock
of every account would do); familiar addresses (``trusted_addresses``) are kept.

Revision ID: 0005_throttle_digests
Revises: 0004_identity
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_throttle_digests"
down_revision = "0004_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM login_throttle"))


def downgrade() -> None:
    # Digests cannot be turned back into names: the older code starts from empty counters too.
    op.execute(sa.text("DELETE FROM login_throttle"))
