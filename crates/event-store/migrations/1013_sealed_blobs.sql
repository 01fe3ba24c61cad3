-- Originals sealed under their tenant's key (docs/DATA-PROTECTION.md): with data
-- protection on, an uploaded file is stored here, per tenant (the same bytes of two
-- tenants are two rows, each under its own key), never in `blobs` in clear. Erasing the
-- tenant's keys makes them unreadable; the erasure deletes them too.
CREATE TABLE sealed_blobs (
    tenant_id      text        NOT NULL,
    sha256         text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    media_type     text        NOT NULL,
    size_bytes     bigint      NOT NULL,
    key_generation integer     NOT NULL,
    sealed         bytea       NOT NULL,  -- nonce, ChaCha20-Poly1305 ciphertext, tag
    stored_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sha256)
);
