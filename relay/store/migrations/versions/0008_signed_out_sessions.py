"""signed_out: dashboard sessions ended by signing out

The dashboard's session lives in a signed cookie; signing out cleared the browser's
copy only, and a copy of the cookie taken before stayed valid for its 12 hours. Each
session now carries a random id, and signing out records the id's SHA-256 here until
the cookie would have expired.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signed_out",
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_hash", name=op.f("pk_signed_out")),
    )


def downgrade() -> None:
    op.drop_table("signed_out")
