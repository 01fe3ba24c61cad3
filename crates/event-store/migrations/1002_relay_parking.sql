-- Events a relay could not publish (too large for the broker, not encodable), and the
-- events of the same aggregate waiting behind them: per-aggregate order holds while other
-- aggregates keep flowing. Re-driven in order by the active relay when asked.
CREATE TABLE relay_parked (
    name           text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    reason         text        NOT NULL,
    parked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, aggregate_type, aggregate_id, sequence)
);

-- The cluster a cursor's transaction ids belong to (pg_control_system()), so a cursor
-- carried into another cluster (dump and restore, logical migration) is refused instead
-- of silently skipping events; and a re-drive request for the active relay.
ALTER TABLE relay_cursor
    ADD COLUMN system_identifier text,
    ADD COLUMN redrive_requested_at timestamptz;
