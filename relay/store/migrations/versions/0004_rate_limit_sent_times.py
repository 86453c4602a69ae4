"""rate_limits.sent: when the App's last calls went (PostgreSQL's shared limiter)

On SQLite the relay runs as one process and keeps these times in memory.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.add_column(
            "rate_limits",
            sa.Column("sent", postgresql.ARRAY(sa.Float), nullable=False, server_default="{}"),
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column("rate_limits", "sent")
