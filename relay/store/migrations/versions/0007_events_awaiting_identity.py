"""events.awaiting_account / awaiting_customer: a rejected event waiting for an identity

An event rejected because `lead_email` met a customer id with no lead email yet (a
Paddle transaction that arrived before its customer.created) records which one; the
dispatcher process renders it again once the route learns that identity. A partial
index keeps the lookup to the waiting events.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WAITING = sa.text("awaiting_customer IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("awaiting_account", sa.String(64)))
        batch.add_column(sa.Column("awaiting_customer", sa.String(200)))
    op.create_index(
        "ix_events_awaiting",
        "events",
        ["route", "awaiting_account", "awaiting_customer"],
        sqlite_where=WAITING,
        postgresql_where=WAITING,
    )


def downgrade() -> None:
    op.drop_index("ix_events_awaiting", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("awaiting_customer")
        batch.drop_column("awaiting_account")
