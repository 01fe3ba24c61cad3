-- Group commit puts the appends of several commands into one transaction. An idempotency
-- key continues only its own append (the same aggregate, the next sequence); a second
-- append with the same key in the same transaction is a unique_violation, as it would be
-- in a transaction of its own.
CREATE OR REPLACE FUNCTION record_idempotency_key() RETURNS trigger LANGUAGE plpgsql AS $$
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
        WHERE ik.tx_id = pg_current_xact_id()
          AND ik.aggregate_type = EXCLUDED.aggregate_type
          AND ik.aggregate_id = EXCLUDED.aggregate_id
          AND ik.last_sequence = EXCLUDED.last_sequence - 1;
    IF NOT FOUND THEN
        RAISE unique_violation USING MESSAGE = format('idempotency key %L already used', k);
    END IF;
    RETURN NEW;
END $$;
