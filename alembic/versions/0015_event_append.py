"""Appending events in one round trip on PostgreSQL: tandem_append_events()

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-27 21:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Appends events and their webhook deliveries (DESIGN.md section 4) in one statement: it
# moves the pair's event_seq (when there is a pair), the global `events` counter and the
# organization's event_position on by the number of events, in that order (the order in
# which every writer takes these row locks), numbers the events from them, and inserts
# them with their deliveries. The counters' row locks are held until commit, so the
# caller commits next: nothing but the COMMIT stands between this call and the moment
# the next writer may number its events. `p_events`: [{"id", "type", "data"}, ...] in
# order; `p_deliveries`: [{"id", "endpoint_id", "event": index from 1}, ...]. Returns the
# last number of each counter; owner_org is null when the pair does not exist (nothing is
# written). SQLite runs the same steps statement by statement (app.events.service).
FUNCTION = """
CREATE OR REPLACE FUNCTION tandem_append_events(
    p_cluster_id varchar, p_org_id varchar, p_created_at timestamptz,
    p_events json, p_deliveries json,
    OUT last_sequence integer, OUT owner_org varchar,
    OUT last_position bigint, OUT last_org_position bigint
) LANGUAGE plpgsql AS $$
DECLARE
    n integer := json_array_length(p_events);
BEGIN
    owner_org := p_org_id;
    last_sequence := 0;
    IF p_cluster_id IS NOT NULL THEN
        UPDATE clusters SET event_seq = clusters.event_seq + n
            WHERE clusters.id = p_cluster_id
            RETURNING clusters.event_seq, clusters.org_id INTO last_sequence, owner_org;
        IF NOT FOUND THEN
            owner_org := NULL;
            RETURN;
        END IF;
    END IF;
    UPDATE counters SET value = counters.value + n WHERE counters.name = 'events'
        RETURNING counters.value INTO last_position;
    UPDATE organizations SET event_position = organizations.event_position + n
        WHERE organizations.id = owner_org
        RETURNING organizations.event_position INTO last_org_position;
    INSERT INTO events (id, cluster_id, org_id, sequence, position, org_position, type,
                        created_at, data)
        SELECT e ->> 'id', p_cluster_id, owner_org,
               CASE WHEN p_cluster_id IS NULL THEN 0 ELSE last_sequence - n + i::integer END,
               last_position - n + i, last_org_position - n + i, e ->> 'type',
               p_created_at, e -> 'data'
        FROM json_array_elements(p_events) WITH ORDINALITY AS t(e, i);
    INSERT INTO webhook_deliveries (id, endpoint_id, event_id, cluster_id, position, status,
                                    attempts, next_attempt_at, created_at, updated_at)
        SELECT d ->> 'id', d ->> 'endpoint_id', e ->> 'id', p_cluster_id,
               last_position - n + i, 'pending', 0, p_created_at, p_created_at, p_created_at
        FROM json_array_elements(p_deliveries) AS d
        JOIN json_array_elements(p_events) WITH ORDINALITY AS t(e, i)
          ON (d ->> 'event')::bigint = i;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS "
            "tandem_append_events(varchar, varchar, timestamptz, json, json)"
        )
