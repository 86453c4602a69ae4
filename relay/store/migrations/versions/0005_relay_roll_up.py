"""relay_roll_up(): an event's status from its deliveries', read under the event's lock

PostgreSQL only: `queue.finish` records a delivery in one statement, whose queries all
read the snapshot taken when it began. Two deliveries of one event finishing at once
would each roll the event up without the other's new status. Each query of a volatile
function takes a new snapshot: this one takes the event's row, then reads the
deliveries as they are once the other finish has committed. The ranks come from the
caller (`ranked`, least finished first, and the event status `shown` for each), so the
order stays in `relay.store.queue`. `delivery` counts with `new_status`, which the
calling statement is writing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION relay_roll_up(
                of_event varchar, delivery integer, new_status varchar,
                ranked varchar[], shown varchar[]
            ) RETURNS void VOLATILE LANGUAGE sql AS $$
                SELECT 1 FROM events WHERE id = of_event FOR UPDATE;
                UPDATE events
                SET status = COALESCE(shown[(
                    SELECT min(array_position(
                        ranked,
                        CASE WHEN d.id = delivery THEN new_status ELSE d.status END))
                    FROM deliveries d
                    WHERE d.event_id = of_event)], events.status)
                WHERE id = of_event;
            $$
            """
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION relay_roll_up(varchar, integer, varchar, varchar[], varchar[])")
