-- Tamper evidence (docs/DATA-PROTECTION.md): a hash chain per tenant over committed
-- events, in commit order. Link n of a tenant covers link n-1 and the stored bytes of the
-- event it names; nothing here is ever updated, so rewriting an event's row (with the
-- append-only trigger disabled) no longer matches its link.
CREATE TABLE audit_chain (
    tenant_id text   NOT NULL,
    n         bigint NOT NULL CHECK (n > 0),
    event_id  uuid   NOT NULL UNIQUE,
    link      bytea  NOT NULL CHECK (length(link) = 32),
    PRIMARY KEY (tenant_id, n)
);

-- How far the chain has been extended, in commit order (one row).
CREATE TABLE audit_chain_cursor (
    single          boolean PRIMARY KEY DEFAULT true CHECK (single),
    tx_id           xid8    NOT NULL,
    global_position bigint  NOT NULL
);
INSERT INTO audit_chain_cursor (tx_id, global_position) VALUES ('0'::xid8, 0);
