-- A conversation's key belongs to the person who started it (docs/DATA-PROTECTION.md):
-- erasing that person erases the keys they own. A later generation keeps the owner.
ALTER TABLE subject_keys ADD COLUMN owner text;
CREATE INDEX subject_keys_by_owner ON subject_keys (tenant_id, owner) WHERE owner IS NOT NULL;
