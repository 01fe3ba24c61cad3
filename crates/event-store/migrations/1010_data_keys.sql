-- Crypto-shredding's keys (docs/DATA-PROTECTION.md, "Keys"). A tenant key is sealed by
-- the master key from the settings (named by its id, so the master key can rotate); a
-- subject key is sealed by its tenant's key. Erasing a key empties its row and stamps
-- erased_at (the row stays: erasure is idempotent and visible); data written for the
-- subject afterwards gets a key of a new generation, and what the erased one sealed stays
-- unreadable. Keys are never updated otherwise.
CREATE TABLE tenant_keys (
    tenant_id     text        NOT NULL,
    generation    integer     NOT NULL CHECK (generation > 0),
    master_key_id text,
    sealed_key    bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    erased_at     timestamptz,
    PRIMARY KEY (tenant_id, generation),
    CHECK ((sealed_key IS NULL) = (erased_at IS NOT NULL)),
    CHECK ((sealed_key IS NULL) = (master_key_id IS NULL))
);

CREATE TABLE subject_keys (
    tenant_id         text        NOT NULL,
    subject           text        NOT NULL,
    generation        integer     NOT NULL CHECK (generation > 0),
    tenant_generation integer     NOT NULL,
    sealed_key        bytea,
    created_at        timestamptz NOT NULL DEFAULT now(),
    erased_at         timestamptz,
    PRIMARY KEY (tenant_id, subject, generation),
    FOREIGN KEY (tenant_id, tenant_generation) REFERENCES tenant_keys (tenant_id, generation),
    CHECK ((sealed_key IS NULL) = (erased_at IS NOT NULL))
);
