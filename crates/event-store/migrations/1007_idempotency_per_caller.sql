-- An idempotency key belongs to its caller (the tenant and the user or service that sent
-- it), as an API key's do at Stripe: another member sending the same key is making a
-- request of their own, and never gets the first caller's answer (ids, versions, a
-- webhook endpoint's signing secret).
ALTER TABLE idempotency_keys ADD COLUMN user_id text NOT NULL DEFAULT '';

-- Keys recorded before this migration: their caller is on the first event they appended.
UPDATE idempotency_keys ik SET user_id = coalesce(e.metadata ->> 'user_id', '')
FROM events e
WHERE e.aggregate_type = ik.aggregate_type
  AND e.aggregate_id = ik.aggregate_id
  AND e.sequence = ik.first_sequence;

ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (tenant_id, user_id, key);

CREATE OR REPLACE FUNCTION record_idempotency_key() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    k text := NEW.metadata ->> 'idempotency_key';
BEGIN
    IF k IS NULL THEN
        RETURN NEW;
    END IF;
    INSERT INTO idempotency_keys AS ik
        (tenant_id, user_id, key, request_hash, aggregate_type, aggregate_id, first_sequence,
         last_sequence, tx_id)
    VALUES
        (NEW.metadata ->> 'tenant_id', coalesce(NEW.metadata ->> 'user_id', ''), k,
         NEW.metadata ->> 'request_hash', NEW.aggregate_type, NEW.aggregate_id, NEW.sequence,
         NEW.sequence, pg_current_xact_id())
    ON CONFLICT (tenant_id, user_id, key) DO UPDATE SET last_sequence = EXCLUDED.last_sequence
        WHERE ik.tx_id = pg_current_xact_id()
          AND ik.aggregate_type = EXCLUDED.aggregate_type
          AND ik.aggregate_id = EXCLUDED.aggregate_id
          AND ik.last_sequence = EXCLUDED.last_sequence - 1;
    IF NOT FOUND THEN
        RAISE unique_violation USING MESSAGE = format('idempotency key %L already used', k);
    END IF;
    RETURN NEW;
END $$;
