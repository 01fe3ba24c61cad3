-- Originals of files the write side accepted (knowledge documents), content-addressed by
-- their SHA-256 so the same file is stored once and events carry only the hash. Written
-- before the event that names them; a blob no event names (the append failed after it)
-- is harmless and the same upload reuses it.
CREATE TABLE blobs (
    sha256     text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    media_type text        NOT NULL,
    size_bytes bigint      NOT NULL CHECK (size_bytes >= 0),
    bytes      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
