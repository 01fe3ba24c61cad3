-- People named where they act (event metadata's user_id, a few payload fields) are
-- stored as a random pseudonym per person of a tenant (docs/DATA-PROTECTION.md,
-- "Pseudonyms"). Erasing the person deletes the row: what named them names nobody.
CREATE TABLE pseudonyms (
    tenant_id  text        NOT NULL,
    pseudonym  uuid        NOT NULL,
    actor      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, pseudonym),
    UNIQUE (tenant_id, actor)
);
