-- The event store. postgres-es writes the first seven columns (its INSERT names them);
-- the others have defaults, so the crate is used unchanged.
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence > 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    -- Stable global order for readers: (tx_id, global_position). Positions are handed out
    -- before commit, so a reader only reads rows whose writing transaction is older than
    -- every transaction still running (see command-api/src/store/log.rs).
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    tenant_id       text        GENERATED ALWAYS AS (metadata ->> 'tenant_id') STORED,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_commit_order ON events (tx_id, global_position);
CREATE UNIQUE INDEX events_event_id ON events (event_id);
CREATE INDEX events_tenant_order ON events (tenant_id, tx_id, global_position);
CREATE INDEX events_tenant_time ON events (tenant_id, recorded_at);

-- Events are facts: never updated or deleted.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only (% refused)', TG_OP USING ERRCODE = 'P0001';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

-- Idempotency keys, written by a trigger in the same transaction as the events, so a key
-- is recorded if and only if its events are. A second transaction with the same key
-- raises unique_violation, which postgres-es reports as an aggregate conflict; the
-- command service then finds the key and replays the first response.
CREATE TABLE idempotency_keys (
    tenant_id      text        NOT NULL,
    key            text        NOT NULL,
    request_hash   text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    first_sequence bigint      NOT NULL,
    last_sequence  bigint      NOT NULL,
    tx_id          xid8        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

CREATE FUNCTION record_idempotency_key() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    k text := NEW.metadata ->> 'idempotency_key';
BEGIN
    IF k IS NULL THEN
        RETURN NEW;
    END IF;
    INSERT INTO idempotency_keys AS ik
        (tenant_id, key, request_hash, aggregate_type, aggregate_id, first_sequence, last_sequence, tx_id)
    VALUES
        (NEW.metadata ->> 'tenant_id', k, NEW.metadata ->> 'request_hash', NEW.aggregate_type,
         NEW.aggregate_id, NEW.sequence, NEW.sequence, pg_current_xact_id())
    ON CONFLICT (tenant_id, key) DO UPDATE SET last_sequence = EXCLUDED.last_sequence
        WHERE ik.tx_id = pg_current_xact_id();
    IF NOT FOUND THEN
        RAISE unique_violation USING MESSAGE = format('idempotency key %L already used', k);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER events_idempotency BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION record_idempotency_key();

-- Where the relay has published up to, per relay name.
CREATE TABLE relay_cursor (
    name            text        PRIMARY KEY,
    tx_id           xid8        NOT NULL,
    global_position bigint      NOT NULL,
    published       bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
