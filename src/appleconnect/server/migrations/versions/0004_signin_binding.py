"""sign-in requests bound to a browser, counted per address, names bound to the request

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Sign-ins in progress are dropped (they last minutes; a user in the middle starts again), and so
are the pending names of older versions, which were keyed by an unverified ``sub``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM auth_requests"))
    op.execute(sa.text("DELETE FROM pending_names"))
    with op.batch_alter_table("auth_requests", schema=None) as batch_op:
        batch_op.drop_column("nonce")
        batch_op.drop_column("handoff_used_at")
        batch_op.add_column(sa.Column("browser_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("client_bucket", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("first_name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("last_name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("name_code_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_auth_requests_client_bucket"), ["client_bucket"], unique=False
        )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM auth_requests"))
    with op.batch_alter_table("auth_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_requests_client_bucket"))
        batch_op.drop_column("name_code_hash")
        batch_op.drop_column("last_name")
        batch_op.drop_column("first_name")
        batch_op.drop_column("client_bucket")
        batch_op.drop_column("browser_hash")
        batch_op.add_column(sa.Column("handoff_used_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("nonce", sa.String(length=128), nullable=False, server_default="")
        )
