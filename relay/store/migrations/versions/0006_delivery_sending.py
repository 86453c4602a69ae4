"""deliveries.sending: a worker is about to send, or sent, a call that must not repeat

Set, and committed, before the first call of an attempt that carries an action that
must not repeat (points, refunds, cancellations), cleared when the attempt is
recorded. A delivery whose worker died comes back `reclaimed`; only if it was also
`sending` may a call have gone out, and only then is it failed for a person instead
of sent.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(
            sa.Column("sending", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("sending")
