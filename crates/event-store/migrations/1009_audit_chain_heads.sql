-- Tamper evidence, continued: each tenant's newest link (the tip, kept by the chain's
-- extension so it needs no search), and heads recorded over time. A recorded head is a
-- link the chain must still reach: rewriting an event and recomputing every link after
-- it (which only someone with the database's superuser could do) no longer matches it.
-- The keeper also logs every head it records, so copies exist outside the database.
CREATE TABLE audit_chain_tips (
    tenant_id text   PRIMARY KEY,
    n         bigint NOT NULL CHECK (n > 0),
    link      bytea  NOT NULL CHECK (length(link) = 32)
);
INSERT INTO audit_chain_tips (tenant_id, n, link)
SELECT DISTINCT ON (tenant_id) tenant_id, n, link
  FROM audit_chain ORDER BY tenant_id, n DESC;

CREATE TABLE audit_chain_heads (
    tenant_id   text        NOT NULL,
    n           bigint      NOT NULL CHECK (n > 0),
    link        bytea       NOT NULL CHECK (length(link) = 32),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, n)
);
