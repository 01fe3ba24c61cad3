-- Which generation of each projection's tables is live. A rebuild fills a new generation
-- (its own PostgreSQL schema) from the event store, then moves this pointer; readers and
-- the live projector look it up per transaction.
CREATE TABLE projections (
    name        text        PRIMARY KEY,
    generation  integer     NOT NULL CHECK (generation > 0),
    schema_name text        NOT NULL,
    switched_at timestamptz NOT NULL DEFAULT now()
);
