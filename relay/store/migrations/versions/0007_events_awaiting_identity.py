"""events.awaiting_account / awaiting_customer: a rejected event waiting for an identity

An event rejected because `lead_email` met a customer id with no lead email yet (a
Paddle transaction that arrived before its customer.created) records which one; the
dispatcher process renders it again once the route learns that identity. A partial
index keeps the lookup to the waiting events, and one on identities.updated_at to the
identities learned since the last look.

Events rejected so before this migration wait too: their customer id is read back from
the reason (`... no lead identity for customer ID`); the account, which only the mapping
knows, is left empty, and the dispatcher process renders each such event once to learn it
(relay/admin/resume.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WAITING = sa.text("awaiting_customer IS NOT NULL")
UNKNOWN = re.compile(r"no lead identity for customer (.{1,200})\Z", re.DOTALL)


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
    op.create_index("ix_identities_updated_at", "identities", ["updated_at"])
    _wait_for_what_earlier_rejections_named()


def _wait_for_what_earlier_rejections_named() -> None:
    events = sa.table(
        "events",
        sa.column("id"),
        sa.column("status"),
        sa.column("reason"),
        sa.column("awaiting_customer"),
    )
    connection = op.get_bind()
    rejected = connection.execute(
        sa.select(events.c.id, events.c.reason).where(
            events.c.status == "rejected",
            events.c.reason.like("%no lead identity for customer %"),
        )
    ).all()
    for event_id, reason in rejected:
        named = UNKNOWN.search(reason)
        if named is None or reason.endswith("..."):  # a reason cut at 1,000 characters
            continue
        connection.execute(
            sa.update(events)
            .where(events.c.id == event_id)
            .values(awaiting_customer=named.group(1))
        )


def downgrade() -> None:
    op.drop_index("ix_identities_updated_at", table_name="identities")
    op.drop_index("ix_events_awaiting", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("awaiting_customer")
        batch.drop_column("awaiting_account")
