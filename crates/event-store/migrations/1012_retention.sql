-- Retention (docs/DATA-PROTECTION.md, "Retention and export"): a tenant's policy, and
-- what applying it has done. Conversations ended more than conversations_ended_days ago
-- are erased by their keys (commands::retention).
CREATE TABLE retention_policies (
    tenant_id                text        PRIMARY KEY,
    conversations_ended_days integer     NOT NULL CHECK (conversations_ended_days > 0),
    set_by                   text        NOT NULL,
    set_at                   timestamptz NOT NULL DEFAULT now(),
    last_applied_at          timestamptz,
    erased_total             bigint      NOT NULL DEFAULT 0
);
