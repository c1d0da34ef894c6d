"""tandem_append_events() finds the webhook endpoints itself (one round trip less per append)

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28 01:10:00.000000
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As 0015's function, but the caller no longer reads the endpoints first and passes the
# deliveries: the function takes the organization's enabled endpoints FOR KEY SHARE
# (before the counters, the order every writer follows), and makes one delivery per
# event and endpoint that wants it: an endpoint with no event types wants every event; a
# PagerDuty endpoint only the types in `p_pagerduty_types` (app.webhooks.fanout.wants is
# the same rule, for SQLite). A delivery's id is `dlv_` and 20 hex digits, as
# app.columns.new_id makes them. Returns the number of deliveries made as well.
FUNCTION = """
CREATE FUNCTION tandem_append_events(
    p_cluster_id varchar, p_org_id varchar, p_created_at timestamptz,
    p_events json, p_pagerduty_types text[],
    OUT last_sequence integer, OUT owner_org varchar,
    OUT last_position bigint, OUT last_org_position bigint, OUT deliveries integer
) LANGUAGE plpgsql AS $$
DECLARE
    n integer := json_array_length(p_events);
    endpoints json;
BEGIN
    owner_org := p_org_id;
    last_sequence := 0;
    deliveries := 0;
    IF owner_org IS NULL THEN
        SELECT clusters.org_id INTO owner_org FROM clusters WHERE clusters.id = p_cluster_id;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END IF;
    SELECT coalesce(json_agg(json_build_object('id', e.id, 'kind', e.kind,
                                               'types', e.event_types)), '[]')
        INTO endpoints
        FROM (SELECT webhook_endpoints.id, webhook_endpoints.kind,
                     webhook_endpoints.event_types
              FROM webhook_endpoints
              WHERE webhook_endpoints.enabled AND webhook_endpoints.org_id = owner_org
              FOR KEY SHARE) AS e;
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
    IF json_array_length(endpoints) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO webhook_deliveries (id, endpoint_id, event_id, cluster_id, position, status,
                                    attempts, next_attempt_at, created_at, updated_at)
        SELECT 'dlv_' || left(md5(gen_random_uuid()::text), 20), ep ->> 'id', e ->> 'id',
               p_cluster_id, last_position - n + i, 'pending', 0, p_created_at,
               p_created_at, p_created_at
        FROM json_array_elements(p_events) WITH ORDINALITY AS t(e, i)
        CROSS JOIN json_array_elements(endpoints) AS ep
        WHERE (ep ->> 'kind' <> 'pagerduty' OR (e ->> 'type') = ANY (p_pagerduty_types))
          AND (json_typeof(ep -> 'types') <> 'array'
               OR json_array_length(ep -> 'types') = 0
               OR EXISTS (SELECT 1 FROM json_array_elements_text(ep -> 'types') AS w(type)
                          WHERE w.type = e ->> 'type'))
        ORDER BY i;
    GET DIAGNOSTICS deliveries = ROW_COUNT;
END
$$
"""

OLD_SIGNATURE = "tandem_append_events(varchar, varchar, timestamptz, json, json)"
NEW_SIGNATURE = "tandem_append_events(varchar, varchar, timestamptz, json, text[])"


def _previous_function() -> str:
    """0015's function, for the downgrade."""
    path = Path(__file__).with_name("0015_event_append.py")
    spec = importlib.util.spec_from_file_location("tandem_migration_0015", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.FUNCTION)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE}")
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {NEW_SIGNATURE}")
        op.execute(_previous_function())
